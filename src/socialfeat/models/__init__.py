"""Image models: timm backbones, target heads, losses."""
