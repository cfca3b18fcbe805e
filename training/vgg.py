"""VGG networks for Loupe, built from the published configurations.

The network is defined here rather than imported from torchvision so that the
trainer and the exporter run on a machine with PyTorch but no torchvision (a
GPU box), and so that one definition serves both heads:

* ``head="compact"``: global average pooling and one linear layer, for small
  inputs (32x32 Fashion-MNIST: five max-pools leave a 1x1 map).
* ``head="imagenet"``: torchvision's layout (7x7 adaptive pooling, two
  4096-wide hidden layers with dropout, then the output layer). Its
  parameter names match torchvision's ``vgg16`` state_dict, so an ImageNet
  checkpoint loads as is.

Every network has a ``features`` ``nn.Sequential`` whose indices are the layer
indices Loupe's visualisation routes take (model.json ``layers``;
docs/model-folder.md).
"""

import torch
from torch import nn

# Layer configurations of Simonyan & Zisserman (2015), table 1, columns A, B, D
# and E: an int is a 3x3 convolution with that many output channels, "M" a 2x2
# max-pool with stride 2.
CFGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M",
         512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
         512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

HEADS = ("compact", "imagenet")


def scaled(channels, width):
    """Channel count of a layer after the width multiplier (at least 1)."""
    return max(1, int(round(channels * width)))


def make_features(depth, width, batch_norm, in_channels, inplace):
    """The convolutional trunk: an nn.Sequential of conv [bn] relu ... pool."""
    layers = []
    c = in_channels
    for v in CFGS[depth]:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out = scaled(v, width)
        layers.append(nn.Conv2d(c, out, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU(inplace=inplace))
        c = out
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """A VGG: ``features`` -> ``avgpool`` -> flatten -> ``classifier``.

    ``config`` is a plain dict (see ``default_config``), stored beside the
    state_dict in checkpoints so that the exporter can rebuild the module.
    ``inplace`` only chooses in-place ReLUs (less memory while training); the
    exported model uses out-of-place ReLUs so that an activation read from the
    middle of ``features`` is never overwritten by the next layer.
    """

    def __init__(self, config, inplace=False):
        super().__init__()
        cfg = dict(default_config())
        cfg.update(config)
        if cfg["depth"] not in CFGS:
            raise ValueError("depth must be one of %s, not %r"
                             % (sorted(CFGS), cfg["depth"]))
        if cfg["head"] not in HEADS:
            raise ValueError("head must be one of %s, not %r"
                             % (HEADS, cfg["head"]))
        if not cfg["width"] > 0:
            raise ValueError("width must be positive")
        self.config = cfg
        self.features = make_features(cfg["depth"], cfg["width"],
                                      cfg["batch_norm"], cfg["in_channels"],
                                      inplace)
        last = scaled(512, cfg["width"])
        classes = cfg["num_classes"]
        p = cfg["dropout"]
        if cfg["head"] == "compact":
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.classifier = nn.Sequential(nn.Dropout(p),
                                            nn.Linear(last, classes))
        else:
            hidden = scaled(4096, cfg["width"])
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(last * 7 * 7, hidden), nn.ReLU(inplace=inplace),
                nn.Dropout(p),
                nn.Linear(hidden, hidden), nn.ReLU(inplace=inplace),
                nn.Dropout(p),
                nn.Linear(hidden, classes))
        self.reset_parameters()

    def reset_parameters(self):
        """Kaiming-normal convolutions, unit BN, small normal linear layers."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out",
                                        nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def default_config():
    """The architecture of the default CPU recipe (VGG16, width 0.25, BN)."""
    return {"depth": 16, "width": 0.25, "batch_norm": True, "in_channels": 1,
            "num_classes": 10, "head": "compact", "dropout": 0.0}


def layer_table(features):
    """model.json ``layers``: index, name, type and channels of each module.

    ``type`` is the module's class name in lower case; ``channels`` is the
    number of channels the layer outputs (carried through ReLU and pooling).
    """
    rows = []
    channels = None
    for i, m in enumerate(features):
        if isinstance(m, nn.Conv2d):
            channels = m.out_channels
        elif isinstance(m, nn.BatchNorm2d):
            channels = m.num_features
        rows.append({"index": i, "name": "features.%d" % i,
                     "type": type(m).__name__.lower(), "channels": channels})
    return rows
