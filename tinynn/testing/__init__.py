"""tinynn.testing: check a layer's hand-written backward against finite differences and against torch."""
