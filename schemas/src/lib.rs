//! Serde types of manifests and step parameters.
