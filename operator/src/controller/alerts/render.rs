//! Reads the Secrets `spec.alerts` names (in the LogDrain's namespace, each
//! once) and resolves the rules (resolve.rs). A change to one of these
//! Secrets reconciles the LogDrain (the Secret watch in the controller's
//! root), so a fixed or rotated Secret reaches the routes Secret.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::resolve::{Rendered, SecretData, resolve};
use crate::controller::Context;
use crate::crd::LogDrain;
use crate::error::Result;

/// The LogDrain's alert rules, resolved; a Secret that cannot be read (an
/// API error, not a missing Secret) fails the reconcile, which retries, so
/// a rule that runs is never dropped for a passing error.
pub(crate) async fn render_alerts(
    ctx: &Context,
    ld: &LogDrain,
    namespace: &str,
) -> Result<Rendered> {
    if ld.spec.alerts.is_empty() {
        return Ok(Rendered::default());
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut secrets = BTreeMap::new();
    for name in ld.alert_secret_names() {
        if let Some(secret) = api.get_opt(name).await? {
            secrets.insert(name.to_string(), secret_data(&secret));
        }
    }
    Ok(resolve(&ld.spec.alerts, &secrets))
}

/// `data`, over `stringData` a client wrote and the server has not
/// normalized.
fn secret_data(secret: &Secret) -> SecretData {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .string_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    data.extend(
        secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone())),
    );
    SecretData {
        version: secret.metadata.resource_version.clone().unwrap_or_default(),
        data,
    }
}
