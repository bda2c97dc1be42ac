//! The workload side: the ingesters' Deployment or StatefulSet and their buffer
//! claims, and scaling them by hand, by load or by an HPA.

pub(crate) mod autoscale;
pub(crate) mod ingester;
pub(crate) mod pods;
pub(crate) mod scaling;
