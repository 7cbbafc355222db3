//! Shared pieces of the five demo services. They know nothing of the mesh.
//!
//! Not built yet (issue 6); the crate exists so the workspace has its final shape.
