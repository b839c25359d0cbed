"""tinynn.nn.utils: helpers around training, named as in ``torch.nn.utils`` (gradient clipping)."""

from tinynn.nn.utils.clip_grad import clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm

__all__ = ["clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm"]
