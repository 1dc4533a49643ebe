//! The `switchyard` command's parts.

pub mod operate;
