"""End to end: the tiny model overfits one image with three boxes (all found, IoU > 0.8)."""

import torch
from torchvision.ops import box_convert, box_iou

from dinokit.config import load_preset
from dinokit.loss import build_criterion
from dinokit.model.dino import build_model
from dinokit.model.postprocess import postprocess


def _found(model, image, boxes_px, labels) -> int:
    model.eval()
    with torch.no_grad():
        det = postprocess(model(image), torch.tensor([image.shape[-2:]]), 100)[0]
    model.train()
    keep = det["scores"] > 0.3
    found = 0
    for box, label in zip(boxes_px, labels):
        match = keep & (det["labels"] == label)
        found += bool(match.any() and box_iou(det["boxes"][match], box[None]).max() > 0.8)
    return found


def test_tiny_model_overfits_one_image():
    torch.manual_seed(0)
    cfg = load_preset("tiny").model
    cfg.num_classes = 3
    image = torch.full((1, 3, 96, 96), 0.2)
    boxes_px = torch.tensor([[8.0, 10.0, 40.0, 40.0], [50.0, 20.0, 90.0, 50.0], [20.0, 55.0, 60.0, 90.0]])
    for (x0, y0, x1, y1), colour in zip(boxes_px.int().tolist(), [(1, 0, 0), (0, 1, 0), (0, 0, 1)]):
        image[0, :, y0:y1, x0:x1] = torch.tensor(colour, dtype=torch.float32)[:, None, None]
    labels = torch.tensor([0, 1, 2])
    targets = [{"boxes": box_convert(boxes_px / 96, "xyxy", "cxcywh"), "labels": labels}]
    model = build_model(cfg).train()
    criterion = build_criterion(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    found = 0
    for step in range(1, 301):
        loss = criterion(model(image, None, targets), targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        if step % 25 == 0:
            found = _found(model, image, boxes_px, labels)
            if found == 3:
                break
    assert found == 3, f"found {found}/3 boxes after {step} steps (loss {loss.item():.3f})"
