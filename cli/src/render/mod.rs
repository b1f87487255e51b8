//! Renderers of a [`crate::run::Run`]: terminal tables, JSON, flame graphs and HTML. Tables
//! and HTML draw the families' sections (`families::sections`).

pub mod flame;
pub mod html;
pub mod json;
pub mod markup;
pub mod plot;
pub mod table;

pub use crate::fmt::{ns as fmt_ns, si as fmt_si};
