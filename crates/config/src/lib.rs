//! paymesh's configuration model: Istio's resources (and the few Kubernetes kinds local
//! mode needs) read from YAML or JSON files unchanged, each remembering where it came from.
//!
//! Data flows one way: [`load`] turns files into [`Resource`]s (or [`LoadError`]s that name
//! file:line), [`validate`] applies each kind's rules, and [`analyze`] runs the cross-resource
//! analyzers of `istioctl analyze` over a [`Store`].

pub mod analyze;
pub mod load;
pub mod networking;
pub mod path;
pub mod ratelimit;
pub mod resource;
pub mod schema;
pub mod security;
pub mod source;
pub mod store;
pub mod telemetry;
pub mod types;
pub mod validate;
pub mod yaml;

pub use load::{LoadError, Loaded};
pub use path::FieldPath;
pub use resource::Resource;
pub use source::Location;
pub use store::Store;
