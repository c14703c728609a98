"""Model modules beside the particle model: the explicit example (MODEL.md section 5) and the
bimodal model with interval discriminators (MODEL.md section 6)."""
