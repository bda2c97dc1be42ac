//! Fir apps' drains: Heroku gives Fir apps no Logplex drains, only
//! telemetry drains (OpenTelemetry). Each listed Fir app gets exactly one
//! logs-only telemetry drain of ours, to `{endpoint.url}/otlp/{app}`
//! (OTLP/HTTP) or `endpoint.otlpGrpc` (OTLP/gRPC), authenticated by the
//! header `Authorization: Bearer <drain password>`.
//!
//! A telemetry drain is ours when its id is recorded in the status or when
//! it sends to our endpoint for the app (as a log drain is ours by its URL):
//! a drain someone registered by hand to the same endpoint is adopted, any
//! other drain of the app is never touched. Heroku returns the exporter
//! headers as set, so a drain of ours whose endpoint, type, headers or
//! signals differ from what is wanted is updated in place (`PATCH`), never
//! deleted and made again.

use drainpipe_contract::otlp::APP_HEADER;

use super::identity::{list_telemetry_app, named};
use super::report::Change;
use crate::controller::Context;
use crate::crd::{DrainKind, DrainStatus, OtlpTarget};
use crate::heroku::{
    ApiToken, ExporterHeaders, ExporterType, Generation, HerokuError, TelemetryDrain,
    WantedExporter,
};

/// The exporter header carrying the drain password.
const AUTHORIZATION: &str = "Authorization";

/// Heroku's limit on `exporter.endpoint` (schema: `maxLength` 1000).
const MAX_ENDPOINT: usize = 1000;

/// The exporter `app`'s telemetry drain should have.
pub(crate) fn wanted_exporter(
    otlp: Option<&OtlpTarget>,
    app: &str,
    password: &str,
) -> Result<WantedExporter, HerokuError> {
    let Some(target) = otlp else {
        return Err(HerokuError::InvalidDrainUrl(format!(
            "app {app} is a Fir app, which Heroku gives telemetry drains only: set endpoint.url \
             (OTLP/HTTP to {{url}}/otlp/{app}), or endpoint.otlpTransport: grpc with endpoint.otlpGrpc"
        )));
    };
    let endpoint = target.endpoint(app);
    if endpoint.len() > MAX_ENDPOINT {
        return Err(HerokuError::InvalidDrainUrl(format!(
            "the telemetry drain endpoint of app {app} is longer than Heroku's {MAX_ENDPOINT} characters"
        )));
    }
    let mut headers = std::collections::BTreeMap::from([(
        AUTHORIZATION.to_string(),
        format!("Bearer {password}"),
    )]);
    let exporter_type = match target {
        OtlpTarget::Http { .. } => ExporterType::OtlpHttp,
        OtlpTarget::Grpc { .. } => {
            headers.insert(APP_HEADER.to_string(), app.to_string());
            ExporterType::Otlp
        }
    };
    Ok(WantedExporter {
        exporter_type,
        endpoint,
        headers: ExporterHeaders::new(headers),
    })
}

/// What to do with an app's telemetry drains.
#[derive(Debug)]
pub(crate) struct TelemetryPlan<'a> {
    /// The drain of ours kept; `None`: create one.
    pub(crate) kept: Option<&'a TelemetryDrain>,
    /// The kept drain differs from what is wanted: update it.
    pub(crate) update: bool,
    /// Other drains of ours (duplicates, or one replaced): to remove once
    /// the kept one is right, so Heroku always has somewhere to send.
    pub(crate) obsolete: Vec<&'a TelemetryDrain>,
}

/// The drains of an app that are ours: recorded by id, or sending to our
/// endpoint for the app.
pub(crate) fn ours<'a>(
    listed: &'a [TelemetryDrain],
    endpoint: Option<&'a WantedExporter>,
    recorded: impl Fn(&str) -> bool + 'a,
) -> impl Iterator<Item = &'a TelemetryDrain> + 'a {
    listed
        .iter()
        .filter(move |d| recorded(&d.id) || endpoint.is_some_and(|w| w.same_endpoint(&d.exporter)))
}

/// The drains of an app that are ours when removing them: recorded by id,
/// or sending to our endpoint with our drain password (`wanted`'s
/// `Authorization` header), as a log drain is ours by its URL with the
/// password. `wanted` is `None` when the password is not known: then only
/// recorded drains.
pub(crate) fn ours_with_credentials<'a>(
    listed: &'a [TelemetryDrain],
    wanted: Option<&'a WantedExporter>,
    recorded: impl Fn(&str) -> bool + 'a,
) -> impl Iterator<Item = &'a TelemetryDrain> + 'a {
    listed.iter().filter(move |d| {
        recorded(&d.id)
            || wanted.is_some_and(|w| {
                w.same_endpoint(&d.exporter)
                    && w.headers.get(AUTHORIZATION).is_some()
                    && d.exporter.headers.get(AUTHORIZATION) == w.headers.get(AUTHORIZATION)
            })
    })
}

/// Desired against observed, for one app: keep the drain of ours that is
/// already right, else update the recorded one (or the first of ours), else
/// create; every other drain of ours goes.
pub(crate) fn plan_telemetry<'a>(
    listed: &'a [TelemetryDrain],
    wanted: &'a WantedExporter,
    known: Option<&'a DrainStatus>,
) -> TelemetryPlan<'a> {
    let known_id = known
        .filter(|k| k.kind == DrainKind::Telemetry)
        .map(|k| k.id.as_str());
    let ours: Vec<&TelemetryDrain> =
        self::ours(listed, Some(wanted), move |id| Some(id) == known_id).collect();
    let kept = ours
        .iter()
        .find(|d| wanted.satisfied_by(d))
        .or_else(|| ours.iter().find(|d| Some(d.id.as_str()) == known_id))
        .or_else(|| ours.first())
        .copied();
    let update = kept.is_some_and(|d| !wanted.satisfied_by(d));
    let kept_id = kept.map(|d| d.id.as_str());
    let obsolete = ours
        .into_iter()
        .filter(|d| Some(d.id.as_str()) != kept_id)
        .collect();
    TelemetryPlan {
        kept,
        update,
        obsolete,
    }
}

/// The status record of a telemetry drain of ours.
pub(crate) fn telemetry_status(app: &str, drain: &TelemetryDrain, endpoint: &str) -> DrainStatus {
    DrainStatus {
        app: app.to_string(),
        generation: Some(Generation::Fir.as_str().to_string()),
        kind: DrainKind::Telemetry,
        app_id: Some(drain.owner.id.clone()),
        id: drain.id.clone(),
        token: String::new(),
        url: endpoint.to_string(),
    }
}

/// Makes Fir app `app` (id `app_id`) have exactly one telemetry drain of
/// ours, as `wanted`: one list, then only the writes the plan calls for.
pub(crate) async fn sync_fir_app(
    ctx: &Context,
    token: &ApiToken,
    app: &str,
    app_id: Option<&str>,
    wanted: &WantedExporter,
    known: Option<&DrainStatus>,
) -> Result<(DrainStatus, Vec<Change>), HerokuError> {
    let (address, listed) = list_telemetry_app(ctx, token, app, app_id).await?;
    let named = |e| named(e, app);
    let plan = plan_telemetry(&listed, wanted, known);
    let mut changes = Vec::new();
    let existing = match plan.kept {
        Some(d) if plan.update => {
            // Gone between the list and the update: made again below.
            let updated = ctx
                .update_telemetry_drain(token, app, &d.id, wanted)
                .await
                .map_err(named)?;
            if let Some(u) = &updated {
                changes.push(Change::TelemetryUpdated(u.clone()));
            }
            updated
        }
        Some(d) => Some(d.clone()),
        None => None,
    };
    let kept = match existing {
        Some(d) => d,
        None => {
            // The owner is addressed by id only (schema: owner.id is a uuid).
            let owner = app_id
                .map(str::to_string)
                .or_else(|| listed.first().map(|d| d.owner.id.clone()))
                .or_else(|| (address != app).then(|| address.clone()))
                .ok_or_else(|| {
                    HerokuError::InvalidResponse(format!(
                        "no Heroku app id known for {app}: cannot make its telemetry drain"
                    ))
                })?;
            let created = ctx
                .create_telemetry_drain(token, app, &owner, wanted)
                .await
                .map_err(named)?;
            changes.push(Change::TelemetryCreated(created.clone()));
            created
        }
    };
    for d in plan.obsolete {
        if ctx
            .delete_telemetry_drain(token, app, &d.id)
            .await
            .map_err(named)?
        {
            changes.push(Change::TelemetryRemoved { id: d.id.clone() });
        }
    }
    Ok((telemetry_status(app, &kept, &wanted.endpoint), changes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::heroku_telemetry_drains;

    const APP_ID: &str = "01234567-89ab-cdef-0123-456789abcdef";

    fn wanted() -> WantedExporter {
        let target = OtlpTarget::Http {
            url: "https://logs.example.com".into(),
        };
        wanted_exporter(Some(&target), "example", "pw-current").expect("wanted")
    }

    fn recorded(id: &str) -> DrainStatus {
        DrainStatus {
            app: "example".into(),
            generation: Some("fir".into()),
            kind: DrainKind::Telemetry,
            app_id: Some(APP_ID.into()),
            id: id.into(),
            token: String::new(),
            url: "https://logs.example.com/otlp/example".into(),
        }
    }

    fn ids(drains: &[&TelemetryDrain]) -> Vec<String> {
        drains.iter().map(|d| d.id.clone()).collect()
    }

    #[test]
    fn the_wanted_exporter_follows_the_transport() {
        let w = wanted();
        assert_eq!(w.exporter_type, ExporterType::OtlpHttp);
        assert_eq!(w.endpoint, "https://logs.example.com/otlp/example");
        assert_eq!(w.headers.get("authorization"), Some("Bearer pw-current"));
        assert_eq!(w.headers.get(APP_HEADER), None);
        let grpc = OtlpTarget::Grpc {
            address: "logs.example.com:4317".into(),
        };
        let g = wanted_exporter(Some(&grpc), "example", "pw").expect("grpc");
        assert_eq!(g.exporter_type, ExporterType::Otlp);
        assert_eq!(g.endpoint, "logs.example.com:4317");
        assert_eq!(g.headers.get(APP_HEADER), Some("example"));
        let e = wanted_exporter(None, "example", "pw").expect_err("no endpoint");
        assert!(e.to_string().contains("otlpGrpc"), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
    }

    /// The sample (operator/testdata/heroku/README.md) has, on one app: ours
    /// as wanted (0), ours with a rotated password (1), a foreign drain to
    /// another endpoint (2), ours by endpoint from a hand registration with
    /// another header (3), and a foreign gRPC drain (4).
    #[test]
    fn the_drain_kept_is_the_one_already_right_and_the_rest_of_ours_goes() {
        let listed = heroku_telemetry_drains();
        let w = wanted();
        let plan = plan_telemetry(&listed, &w, None);
        assert_eq!(
            plan.kept.map(|d| d.id.as_str()),
            Some("01234567-89ab-cdef-0123-456789abcdef")
        );
        assert!(!plan.update);
        assert_eq!(
            ids(&plan.obsolete),
            [
                "11234567-89ab-cdef-0123-456789abcdef",
                "31234567-89ab-cdef-0123-456789abcdef"
            ]
        );
    }

    #[test]
    fn a_recorded_drain_that_drifted_is_updated_in_place() {
        let listed = heroku_telemetry_drains();
        // Only the rotated drain and the foreign ones are there.
        let listed: Vec<TelemetryDrain> = listed
            .into_iter()
            .filter(|d| !d.id.starts_with('0') && !d.id.starts_with('3'))
            .collect();
        let w = wanted();
        let known = recorded("11234567-89ab-cdef-0123-456789abcdef");
        let plan = plan_telemetry(&listed, &w, Some(&known));
        assert_eq!(plan.kept.map(|d| d.id.as_str()), Some(known.id.as_str()));
        assert!(plan.update, "the old password is drift");
        assert!(plan.obsolete.is_empty(), "{:?}", ids(&plan.obsolete));

        // The endpoint moved: the recorded drain is still ours, by id.
        let moved = OtlpTarget::Http {
            url: "https://new.example.com".into(),
        };
        let w = wanted_exporter(Some(&moved), "example", "pw-current").expect("wanted");
        let plan = plan_telemetry(&listed, &w, Some(&known));
        assert_eq!(plan.kept.map(|d| d.id.as_str()), Some(known.id.as_str()));
        assert!(plan.update);
    }

    /// Removing with the status lost: ours are the drains to our endpoint
    /// with our password; without the password, only recorded ones.
    #[test]
    fn removal_takes_drains_to_our_endpoint_with_our_password() {
        let listed = heroku_telemetry_drains();
        let w = wanted();
        let none = |_: &str| false;
        let found: Vec<&TelemetryDrain> = ours_with_credentials(&listed, Some(&w), none).collect();
        assert_eq!(ids(&found), ["01234567-89ab-cdef-0123-456789abcdef"]);
        let old = "11234567-89ab-cdef-0123-456789abcdef";
        let found: Vec<&TelemetryDrain> =
            ours_with_credentials(&listed, None, |id| id == old).collect();
        assert_eq!(ids(&found), [old]);
        assert_eq!(ours_with_credentials(&listed, None, none).count(), 0);
    }

    #[test]
    fn foreign_drains_are_never_ours() {
        let listed: Vec<TelemetryDrain> = heroku_telemetry_drains()
            .into_iter()
            .filter(|d| d.id.starts_with('2') || d.id.starts_with('4'))
            .collect();
        let w = wanted();
        let plan = plan_telemetry(&listed, &w, None);
        assert!(plan.kept.is_none(), "nothing of ours: create");
        assert!(plan.obsolete.is_empty());
        // A log-drain record's id never makes a telemetry drain ours.
        let log = DrainStatus {
            kind: DrainKind::Log,
            ..recorded("21234567-89ab-cdef-0123-456789abcdef")
        };
        assert!(plan_telemetry(&listed, &w, Some(&log)).kept.is_none());
    }

    #[test]
    fn the_status_record_says_fir_telemetry_and_the_app_id() {
        let listed = heroku_telemetry_drains();
        let st = telemetry_status("example", &listed[0], &wanted().endpoint);
        assert_eq!(st.generation.as_deref(), Some("fir"));
        assert_eq!(st.kind, DrainKind::Telemetry);
        assert_eq!(st.app_id.as_deref(), Some(APP_ID));
        assert!(st.token.is_empty());
        assert_eq!(st.url, "https://logs.example.com/otlp/example");
        let json = serde_json::to_value(&st).expect("json");
        assert!(json.get("token").is_none(), "{json}");
        assert_eq!(json["kind"], "telemetry");
    }
}
