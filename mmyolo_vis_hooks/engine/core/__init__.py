"""Building blocks every engine shares: geometry, test pipelines, layer paths and capture,
drawing, the model-state guard, image selection and argument checks."""
