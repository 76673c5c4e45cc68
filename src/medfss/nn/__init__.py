"""Network building blocks shared by every model: backbones, prototype operations, losses."""
