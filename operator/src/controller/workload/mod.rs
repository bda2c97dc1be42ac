//! The workload side: the ingesters' Deployment or StatefulSet and their buffer
//! claims, scaling them by hand, by load or by an HPA, and the compaction
//! CronJob.

pub(crate) mod autoscale;
pub(crate) mod compaction;
pub(crate) mod ingester;
pub(crate) mod pods;
pub(crate) mod scaling;
