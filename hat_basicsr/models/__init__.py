"""Models, registered into basicsr's MODEL_REGISTRY on import (one per *_model.py file)."""

from hat_basicsr.models import (  # noqa: F401
    hat_model,  # noqa: F401
    realhat_gan_model,
    realhat_mse_model,
)
