//! The Heroku API token, read from the Secret the LogDrain names.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use crate::controller::Context;
use crate::crd::LogDrain;
use crate::error::{Error, Result};
use crate::heroku::ApiToken;
use crate::resources;

/// The Heroku API token from the Secret the LogDrain names.
pub(crate) async fn heroku_token(ctx: &Context, ld: &LogDrain) -> Result<ApiToken> {
    let ns = ld.namespace().ok_or(Error::MissingObjectKey)?;
    let sel = &ld.spec.heroku.api_token_secret_ref;
    let missing = |problem: String| Error::HerokuTokenMissing {
        namespace: ns.clone(),
        name: sel.name.clone(),
        problem,
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = api
        .get_opt(&sel.name)
        .await?
        .ok_or_else(|| missing("does not exist".to_string()))?;
    let value = resources::secret_value(&secret, &sel.key)
        .ok_or_else(|| missing(format!("has no key {:?}", sel.key)))?;
    let token = ApiToken::new(value);
    if token.is_empty() {
        return Err(missing(format!("holds an empty value under {:?}", sel.key)));
    }
    Ok(token)
}
