//! Istio's resources: reading them from YAML files and folders, and checking
//! them by Istio's own rules. Every problem is a [`Diagnostic`] naming the
//! file, the line and the field path.

pub mod lines;
mod load;
mod resource;
pub mod types;
mod validate;

pub use load::{load_paths, load_str};
pub use resource::{name_ok, Diagnostic, Kind, Resource, Source, Spec, ROOT_NAMESPACE};
