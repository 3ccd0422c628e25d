"""Building blocks every engine shares: geometry, test pipelines, layer paths and capture,
rendering, the model-state guard, image selection and argument checks."""
