"""The built-in torch models (``problem.model``), written here: torchvision does not import beside
the pinned CPU torch wheel.

Every factory takes ``(in_shape, num_classes)`` — ``in_shape`` is (C, H, W) for images, (T,) for
character sequences — and returns a fresh ``nn.Module`` initialised from torch's global generator
(the caller seeds it).

* ``mlp``: the 2NN of McMahan et al. 2017, used by Xiong et al. 2023 (DSGD-AAU): two hidden layers
  of 200 units with ReLU.
* ``cnn``: LeNet-5 style, two 5×5 convolutions (padding 2) with 2×2 max-pooling and two fully
  connected layers; on 1×8×8 digits the pools leave 2×2 maps, on 28×28 MNIST 7×7.
* ``alexnet``: the CIFAR-sized AlexNet of the DSGD-AAU experiments (five 3×3 convolutions, three
  pools, classifier 256·(H/8)·(W/8) → 1024 → 512 → C, dropout 0.5).
* ``vgg11`` / ``vgg13``: VGG (Simonyan & Zisserman 2015) configurations A and B with BatchNorm
  after every convolution and the CIFAR classifier: after five pools a 32×32 image is 512×1×1,
  so the three 4096-wide layers of the ImageNet model are replaced by one ``Linear(512, C)``.
  This is the "modified VGG11" of Zhou & Pu 2025's CIFAR-10 experiment as the CIFAR-10
  literature uses it (9.2 M parameters instead of 133 M; the ImageNet head would be 94 % of the
  parameters, all of it fitted to a 1×1 map). BatchNorm buffers follow the policy in
  ``problems/nn/evaluation.py``.
* ``resnet18``: He et al. 2016's ResNet-18 in its CIFAR form (3×3 stride-1 stem, no max-pool,
  four stages of two BasicBlocks, global average pool).
* ``char-lstm``: next-character prediction for LEAF Shakespeare (Caldas et al. 2018; the
  DSGD-AAU paper's text task): embedding 8, two LSTM layers of 256, a linear head over the
  vocabulary on the last position.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Factory = Callable[[tuple[int, ...], int], nn.Module]


def mlp(in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    d = 1
    for s in in_shape:
        d *= s
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(),
                         nn.Linear(200, num_classes))


def cnn(in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c, h, w = _image(in_shape, "cnn")
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * (h // 4) * (w // 4), 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes),
    )


def alexnet(in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c, h, w = _image(in_shape, "alexnet")
    return nn.Sequential(
        nn.Conv2d(c, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(64, 192, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(256 * (h // 8) * (w // 8), 1024), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(1024, 512), nn.ReLU(inplace=True), nn.Linear(512, num_classes),
    )


_VGG = {"vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
        "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]}


def _vgg(name: str, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c, h, w = _image(in_shape, name)
    layers: list[nn.Module] = []
    pools = 0
    for v in _VGG[name]:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
            pools += 1
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
            c = int(v)
    side = (h >> pools) * (w >> pools)
    if side < 1:
        raise ValueError(f"{name}: a {h}x{w} image is too small for {pools} 2x2 pools (needs >= 32x32)")
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512 * side, num_classes))


def vgg11(in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _vgg("vgg11", in_shape, num_classes)


def vgg13(in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _vgg("vgg13", in_shape, num_classes)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def resnet18(in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c, _, _ = _image(in_shape, "resnet18")
    return ResNet18(c, num_classes)


class CharLSTM(nn.Module):
    """Logits of the character after each sequence: embed → LSTM → linear on the last step."""

    def __init__(self, vocab: int, embed: int = 8, hidden: int = 256, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(x))
        return self.head(out[:, -1])


def char_lstm(in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return CharLSTM(num_classes)


MODELS: dict[str, Factory] = {"mlp": mlp, "cnn": cnn, "alexnet": alexnet, "vgg11": vgg11, "vgg13": vgg13,
                              "resnet18": resnet18, "char-lstm": char_lstm}


def _image(in_shape: tuple[int, ...], name: str) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise ValueError(f"model {name!r} needs images (C, H, W), the data gives samples of shape {in_shape}")
    return int(in_shape[0]), int(in_shape[1]), int(in_shape[2])
