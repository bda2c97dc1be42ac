//! The runbook's steps as LogDrain fields and conditions (docs/operations.md):
//! the emergency stop, retention rules, HTTPS exposure, and the conditions
//! that answer "is the drain broken?". Real kube-apiserver, MinIO and moto;
//! only Heroku is the fake.

use std::time::Duration;

use drainpipe_tests::heroku_fake::FakeOptions;
use drainpipe_tests::ingester::InProcessIngester;
use drainpipe_tests::node::Logplex;
use drainpipe_tests::operator::{
    Harness, condition, condition_is, condition_reason, status_drains, wait_for,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

async fn harness(prefix: &str, apps: &[&str]) -> Harness {
    let h = Harness::new(prefix, FakeOptions::default()).await;
    for app in apps {
        h.heroku.add_app(app);
    }
    h
}

/// One RFC 5424 frame as Logplex sends it.
fn frame(text: &str) -> Vec<u8> {
    format!("<190>1 2026-12-02T01:00:00.000000+00:00 host app web.1 - {text}").into_bytes()
}

/// The routes file of LogDrain `name` written where an ingester can read it,
/// as the pods get it from the routes Secret.
async fn routes_file(h: &Harness, name: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let api: Api<Secret> = Api::namespaced(h.client.clone(), &h.ns);
    let secret = api
        .get(&format!("{name}-routes"))
        .await
        .expect("routes Secret");
    let yaml = secret
        .data
        .and_then(|d| d.get("routes.yaml").cloned())
        .expect("routes.yaml");
    let path = dir.join("routes.yaml");
    std::fs::write(&path, yaml.0).expect("write routes file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_removes_exactly_our_drains_and_resume_restores_them() {
    let apps = ["pay-web", "pay-worker"];
    let mut h = harness("suspend", &apps).await;
    // A drain a person added, and another LogDrain's drain to its own
    // endpoint: neither is this LogDrain's.
    let foreign = h
        .heroku
        .insert_drain("pay-web", "https://papertrail.example.com/x", None);
    h.start();
    h.apply("pay", h.spec(&apps, None)).await;
    h.wait_drains_registered("pay", &apps).await;
    let password = h.drain_password("pay").await;
    let before: Vec<_> = apps.iter().map(|a| h.heroku.drains(a)).collect();

    let mut spec = h.spec(&apps, None);
    spec["suspend"] = json!(true);
    h.apply("pay", spec).await;
    let ld = h
        .wait_status("pay", "suspended", MINUTE, |ld| {
            condition_reason(ld, "Ready") == "Suspended"
        })
        .await;
    assert!(condition_is(&ld, "Ready", "False"));
    assert_eq!(condition_reason(&ld, "DrainsRegistered"), "Suspended");
    assert!(status_drains(&ld).is_empty(), "{:?}", status_drains(&ld));
    // Exactly ours are gone: the person's drain stays.
    let left: Vec<String> = h
        .heroku
        .drains("pay-web")
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(left, std::slice::from_ref(&foreign.id));
    assert!(h.heroku.drains("pay-worker").is_empty());
    // Everything needed to resume is kept: the ingester, the password.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(h.client.clone(), &h.ns);
    assert!(
        deployments
            .get_opt("pay-ingester")
            .await
            .expect("get")
            .is_some()
    );
    assert_eq!(h.drain_password("pay").await, password);
    let reasons = h.event_reasons("pay").await;
    assert!(
        reasons.iter().any(|r| r == "DrainsSuspended"),
        "{reasons:?}"
    );

    // While suspended, a resync makes no Heroku call.
    h.heroku.reset_counts();
    let mut spec = h.spec(&apps, None);
    spec["suspend"] = json!(true);
    spec["ingester"]["replicas"] = json!(1);
    h.apply("pay", spec).await;
    h.wait_status("pay", "scaled while suspended", MINUTE, |ld| {
        condition_reason(ld, "Ready") == "Suspended"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.heroku.request_count(), 0, "{:?}", h.heroku.requests());

    // Resume: new drains, the same password, and they authenticate against
    // an ingester reading the routes the operator wrote.
    h.apply("pay", h.spec(&apps, None)).await;
    let ld = h.wait_drains_registered("pay", &apps).await;
    assert_eq!(h.drain_password("pay").await, password);
    let scratch = tempfile::tempdir().expect("scratch");
    let routes = routes_file(&h, "pay", scratch.path()).await;
    let ingester = InProcessIngester::start_with(
        &h.env,
        &format!("{}/", h.ns),
        &["--routes".to_string(), routes.display().to_string()],
    )
    .await;
    for (i, app) in apps.iter().enumerate() {
        let drains = h.heroku.drains(app);
        let ours: Vec<_> = drains.iter().filter(|d| d.id != foreign.id).collect();
        assert_eq!(ours.len(), 1, "{app}: {drains:?}");
        assert!(
            before[i].iter().all(|b| b.id != ours[0].id),
            "{app}: a new drain was made"
        );
        let url = reqwest::Url::parse(&ours[0].url).expect("drain URL");
        assert_eq!(url.password(), Some(password.as_str()));
        let recorded = status_drains(&ld);
        assert!(recorded.iter().any(|d| d.app == *app && d.id == ours[0].id));
        let status = ingester
            .post_logplex_as(
                app,
                (url.username(), url.password().unwrap_or_default()),
                &ours[0].token,
                &[frame("resumed")],
            )
            .await;
        assert_eq!(status, 200, "{app}: the restored drain URL authenticates");
        // A wrong password does not.
        let status = ingester
            .post_logplex_as(app, ("drainpipe", "wrong"), &ours[0].token, &[frame("x")])
            .await;
        assert_eq!(status, 401, "{app}");
    }
    ingester.stop().await;
    let msg = condition(&ld, "DrainsRegistered")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(!msg.contains(&password), "{msg}");
    h.teardown().await;
}

/// moto's S3 (the same server as its Glue): it accepts transitions to
/// Glacier classes, which MinIO refuses without a configured remote tier.
fn moto_s3(h: &Harness) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(h.env.region.clone()))
        .endpoint_url(&h.env.glue_endpoint)
        .credentials_provider(Credentials::new("moto", "moto", None, None, "test"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The bucket's rules as (id, prefix, transition days and class, expiry).
// Stores may echo a rule's prefix the legacy (deprecated) way.
#[allow(deprecated)]
async fn rules(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<(String, String, String)> {
    let out = match s3
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) => {
            use aws_sdk_s3::error::ProvideErrorMetadata;
            assert_eq!(e.code(), Some("NoSuchLifecycleConfiguration"), "{e:?}");
            return Vec::new();
        }
    };
    out.rules()
        .iter()
        .map(|r| {
            let prefix = r
                .filter()
                .and_then(|f| f.prefix())
                .or(r.prefix())
                .unwrap_or_default()
                .to_string();
            let actions = r
                .transitions()
                .iter()
                .map(|t| {
                    format!(
                        "{}d->{}",
                        t.days().unwrap_or_default(),
                        t.storage_class().map(|c| c.as_str()).unwrap_or_default()
                    )
                })
                .chain(
                    r.expiration()
                        .and_then(|e| e.days())
                        .map(|d| format!("expire {d}d")),
                )
                .collect::<Vec<_>>()
                .join(", ");
            (r.id().unwrap_or_default().to_string(), prefix, actions)
        })
        .collect()
}

fn rule(id: &str, prefix: &str, actions: &str) -> (String, String, String) {
    (id.to_string(), prefix.to_string(), actions.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_rules_are_merged_into_the_bucket_keeping_foreign_rules() {
    use aws_sdk_s3::types::{
        BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
        LifecycleRuleFilter,
    };
    let mut h = harness("lifecycle", &["ret-web"]).await;
    let s3 = moto_s3(&h);
    let bucket = format!("lc-{}", h.ns);
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket in moto");
    // A person's rule: Athena's query results expire after 30 days.
    let athena = LifecycleRule::builder()
        .id("athena-results")
        .status(ExpirationStatus::Enabled)
        .filter(
            LifecycleRuleFilter::builder()
                .prefix("athena-results/")
                .build(),
        )
        .expiration(LifecycleExpiration::builder().days(30).build())
        .build()
        .expect("rule");
    s3.put_bucket_lifecycle_configuration()
        .bucket(&bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .rules(athena)
                .build()
                .expect("config"),
        )
        .send()
        .await
        .expect("put the foreign rule");

    h.start();
    let spec_for = |prefix: &str, lifecycle: serde_json::Value| {
        let mut spec = h.spec(&["ret-web"], None);
        spec["archive"]["s3"]["bucket"] = json!(bucket);
        spec["archive"]["s3"]["endpoint"] = json!(h.env.glue_endpoint);
        spec["archive"]["s3"]["prefix"] = json!(prefix);
        if !lifecycle.is_null() {
            spec["archive"]["s3"]["lifecycle"] = lifecycle;
        }
        spec
    };
    h.apply(
        "ret",
        spec_for("logs/", json!({"transitionDays": 90, "expireDays": 365})),
    )
    .await;
    let ld = h
        .wait_status("ret", "retention applied", MINUTE, |ld| {
            condition_is(ld, "RetentionApplied", "True")
        })
        .await;
    let msg = condition(&ld, "RetentionApplied")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        msg.contains("to GLACIER after 90 days, deleted after 365 days"),
        "{msg}"
    );
    assert_eq!(
        rules(&s3, &bucket).await,
        [
            rule("athena-results", "athena-results/", "expire 30d"),
            rule("drainpipe:logs/", "logs/", "90d->GLACIER, expire 365d"),
        ]
    );

    // A second LogDrain on another prefix of the same bucket adds its own.
    h.heroku.add_app("ret-api");
    let mut other = spec_for("other/", json!({"expireDays": 7}));
    other["apps"] = json!(["ret-api"]);
    h.apply("ret2", other).await;
    h.wait_status("ret2", "retention applied", MINUTE, |ld| {
        condition_is(ld, "RetentionApplied", "True")
    })
    .await;

    // Changing the retention updates our rule in place.
    h.apply(
        "ret",
        spec_for(
            "logs/",
            json!({"transitionDays": 30, "storageClass": "DEEP_ARCHIVE", "expireDays": 730}),
        ),
    )
    .await;
    h.wait_status("ret", "retention updated", MINUTE, |ld| {
        condition(ld, "RetentionApplied").is_some_and(|c| c.message.contains("DEEP_ARCHIVE"))
    })
    .await;
    assert_eq!(
        rules(&s3, &bucket).await,
        [
            rule("athena-results", "athena-results/", "expire 30d"),
            rule("drainpipe:logs/", "logs/", "30d->DEEP_ARCHIVE, expire 730d"),
            rule("drainpipe:other/", "other/", "expire 7d"),
        ]
    );
    let reasons = h.event_reasons("ret").await;
    for r in ["LifecycleRuleAdded", "LifecycleRuleUpdated"] {
        assert!(reasons.iter().any(|x| x == r), "{r}: {reasons:?}");
    }

    // Dropping the field removes only our rule; the condition goes with it.
    h.apply("ret", spec_for("logs/", serde_json::Value::Null))
        .await;
    h.wait_status("ret", "no retention condition", MINUTE, |ld| {
        condition(ld, "RetentionApplied").is_none()
    })
    .await;
    assert_eq!(
        rules(&s3, &bucket).await,
        [
            rule("athena-results", "athena-results/", "expire 30d"),
            rule("drainpipe:other/", "other/", "expire 7d"),
        ]
    );
    assert!(
        h.event_reasons("ret")
            .await
            .iter()
            .any(|x| x == "LifecycleRuleRemoved")
    );

    // The API server refuses a rule without an action, or expiring before
    // the transition.
    for bad in [json!({}), json!({"transitionDays": 90, "expireDays": 30})] {
        let obj = json!({
            "apiVersion": "drainpipe.dev/v1alpha1", "kind": "LogDrain",
            "metadata": {"name": "bad"}, "spec": spec_for("logs/", bad.clone()),
        });
        let err = h
            .logdrains()
            .patch(
                "bad",
                &kube::api::PatchParams::apply("drainpipe-tests"),
                &kube::api::Patch::Apply(&obj),
            )
            .await
            .expect_err("invalid lifecycle refused");
        assert!(err.to_string().contains("transitionDays"), "{bad}: {err}");
    }
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_failures_are_reported_with_the_permission_to_grant() {
    let mut h = harness("lcdeny", &["deny-web"]).await;
    h.start();
    // A bucket that does not exist in moto: S3's answer is the reason.
    let mut spec = h.spec(&["deny-web"], None);
    spec["archive"]["s3"]["bucket"] = json!(format!("missing-{}", h.ns));
    spec["archive"]["s3"]["endpoint"] = json!(h.env.glue_endpoint);
    spec["archive"]["s3"]["lifecycle"] = json!({"expireDays": 30});
    h.apply("deny", spec).await;
    let ld = h
        .wait_status("deny", "retention failed", MINUTE, |ld| {
            condition_is(ld, "RetentionApplied", "False")
        })
        .await;
    assert_eq!(
        condition_reason(&ld, "RetentionApplied"),
        "S3BucketNotFound"
    );
    // Retention is not what makes logs flow: Ready does not wait for it.
    assert_ne!(condition_reason(&ld, "Ready"), "S3BucketNotFound");
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_ingress_exposes_the_ingester_over_https() {
    use k8s_openapi::api::networking::v1::Ingress;
    use kube::ResourceExt;
    let mut h = harness("ingress", &["edge-web"]).await;
    h.start();
    let mut spec = h.spec(&["edge-web"], None);
    spec["endpoint"] = json!({"ingress": {
        "className": "nginx",
        "host": "logs.drainpipe.test",
        "tls": {"secretName": "logs-drainpipe-tls"},
        "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt-prod"},
    }});
    let created = h.apply("edge", spec).await;
    let ld = h.wait_drains_registered("edge", &["edge-web"]).await;
    // endpoint.url defaults to https://{host}.
    let drains = status_drains(&ld);
    assert_eq!(
        drains[0].url,
        "https://logs.drainpipe.test/logplex/edge-web"
    );
    let password = h.drain_password("edge").await;
    assert_eq!(
        h.heroku.drains("edge-web")[0].url,
        format!("https://drainpipe:{password}@logs.drainpipe.test/logplex/edge-web")
    );

    let api: Api<Ingress> = Api::namespaced(h.client.clone(), &h.ns);
    let ing = api.get("edge-ingester").await.expect("the Ingress exists");
    assert!(
        ing.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == created.metadata.uid.as_ref() && o.controller == Some(true)),
        "owned by the LogDrain"
    );
    assert_eq!(
        ing.annotations()
            .get("cert-manager.io/cluster-issuer")
            .map(String::as_str),
        Some("letsencrypt-prod")
    );
    let spec = ing.spec.clone().expect("spec");
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let tls = spec.tls.clone().expect("tls");
    assert_eq!(tls[0].secret_name.as_deref(), Some("logs-drainpipe-tls"));
    assert_eq!(
        tls[0].hosts.clone(),
        Some(vec!["logs.drainpipe.test".to_string()])
    );
    let rule = &spec.rules.clone().expect("rules")[0];
    assert_eq!(rule.host.as_deref(), Some("logs.drainpipe.test"));
    let path = &rule.http.as_ref().expect("http").paths[0];
    assert_eq!(path.path.as_deref(), Some("/logplex"));
    assert_eq!(path.path_type, "Prefix");
    let backend = path.backend.service.as_ref().expect("service backend");
    assert_eq!(backend.name, "edge-ingester");
    assert_eq!(
        backend.port.as_ref().and_then(|p| p.name.as_deref()),
        Some("http")
    );

    // url and syslogTls together with an ingress are refused.
    let mut both = h.spec(&["edge-web"], None);
    both["endpoint"] = json!({"syslogTls": "logs.drainpipe.test:6514",
                              "ingress": {"host": "logs.drainpipe.test"}});
    let obj = json!({"apiVersion": "drainpipe.dev/v1alpha1", "kind": "LogDrain",
                     "metadata": {"name": "both"}, "spec": both});
    let err = h
        .logdrains()
        .patch(
            "both",
            &kube::api::PatchParams::apply("drainpipe-tests"),
            &kube::api::Patch::Apply(&obj),
        )
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("endpoint.ingress"), "{err}");

    // Back to a URL of one's own: the operator's Ingress goes.
    h.apply("edge", h.spec(&["edge-web"], None)).await;
    drainpipe_tests::operator::wait_for("the Ingress to be deleted", MINUTE, || {
        let api = api.clone();
        async move {
            api.get_opt("edge-ingester")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_fresh_follows_what_the_ingester_pods_archive() {
    let mut h = harness("fresh", &["fresh-web"]).await;
    h.on_node().await;
    // Objects closed every second, so a line is archived at once.
    h.pod_env("DRAINPIPE_FLUSH_INTERVAL", "1s");
    h.settings.archive_stale_after = Duration::from_secs(4);
    // Requeued every ~2 s, so freshness is read again without other changes.
    h.settings.resync = Duration::from_secs(2);
    h.start();
    let mut spec = h.spec(&["fresh-web"], None);
    spec["ingester"]["replicas"] = json!(1);
    h.apply("fresh", spec).await;
    h.wait_drains_registered("fresh", &["fresh-web"]).await;
    let pod = ready_pod(&h, "fresh").await;
    let logplex = logplex_for(&h, "fresh", "fresh-web").await;

    // Each request its own Logplex frame id: a repeated one is a retry,
    // which the ingester drops as a duplicate.
    let send = |frame_id: u64| {
        let (logplex, pod) = (&logplex, &pod);
        async move {
            let status = logplex
                .post(pod, "fresh-web", frame_id, &[frame("hello")])
                .await;
            assert_eq!(status, 200);
        }
    };
    send(1).await;
    let ld = h
        .wait_status("fresh", "archive fresh", MINUTE, |ld| {
            condition_is(ld, "ArchiveFresh", "True")
                && ld
                    .status
                    .as_ref()
                    .is_some_and(|s| !s.last_objects.is_empty())
        })
        .await;
    let st = ld.status.clone().expect("status");
    assert_eq!(st.last_objects[0].app, "fresh-web");
    assert_eq!(
        st.last_object_at,
        Some(st.last_objects[0].last_object_at.clone())
    );

    // The app stops sending: stale after 4 s, with the app named.
    let ld = h
        .wait_status("fresh", "archive stale", MINUTE, |ld| {
            condition_is(ld, "ArchiveFresh", "False")
        })
        .await;
    assert_eq!(condition_reason(&ld, "ArchiveFresh"), "ArchiveStale");
    let msg = condition(&ld, "ArchiveFresh")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("fresh-web (last object"), "{msg}");

    // It sends again: fresh again.
    send(2).await;
    h.wait_status("fresh", "archive fresh again", MINUTE, |ld| {
        condition_is(ld, "ArchiveFresh", "True")
    })
    .await;
    h.teardown().await;
}

/// `http://IP:8080` of LogDrain `name`'s one Ready ingester pod on the node
/// (none other Ready or being deleted).
async fn ready_pod(h: &Harness, name: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), &h.ns);
    let selector =
        format!("app.kubernetes.io/instance={name},app.kubernetes.io/name=drainpipe-ingester");
    wait_for("one Ready ingester pod", 3 * MINUTE, || {
        let (pods, selector) = (pods.clone(), selector.clone());
        async move {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            if list.items.len() != 1 {
                return None;
            }
            let status = list.items[0].status.clone()?;
            let ready = status
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then(|| format!("http://{}:8080", status.pod_ip.unwrap_or_default()))
        }
    })
    .await
}

/// Gives LogDrain `name`'s ingester pod `credentials`: written into its
/// credentials Secret, the pod deleted, its replacement Ready. Returns the
/// replacement's `http://IP:8080`.
async fn restart_pod_with(
    h: &Harness,
    name: &str,
    credentials: &aws_sdk_s3::config::Credentials,
) -> String {
    h.put_s3_credentials(credentials).await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), &h.ns);
    let selector = format!("app.kubernetes.io/instance={name}");
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default().labels(&selector),
    )
    .await
    .expect("delete the ingester pod");
    ready_pod(h, name).await
}

async fn pod_metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("the pod's /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// A Logplex sender with LogDrain `drain`'s password and `app`'s drain token.
async fn logplex_for(h: &Harness, drain: &str, app: &str) -> Logplex {
    let token = h.heroku.drains(app)[0].token.clone();
    Logplex::new(
        &h.drain_password(drain).await,
        [(app.to_string(), token)].into(),
    )
}

/// A MinIO session policy: `actions` allowed on the test bucket, nothing else.
fn policy(bucket: &str, actions: &[&str]) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": actions,
            "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")],
        }],
    })
    .to_string()
}

/// Keys under `prefix` in the test bucket.
async fn keys(h: &Harness, prefix: &str) -> Vec<String> {
    let out = h
        .env
        .s3_client()
        .list_objects_v2()
        .bucket(&h.env.bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("list objects");
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_writable_follows_the_ingesters_write_probe() {
    let mut h = harness("writable", &["wr-web"]).await;
    h.settings.resync = Duration::from_secs(2);
    let prefix = format!("{}/", h.ns);
    let probes = format!("{prefix}_drainpipe-probe/");
    // Not on the node yet: the pod cannot be scheduled.
    h.start();
    let mut spec = h.spec(&["wr-web"], None);
    spec["ingester"]["replicas"] = json!(1);
    h.apply("wr", spec).await;
    h.wait_drains_registered("wr", &["wr-web"]).await;

    // Before any pod answers, the operator cannot know.
    let ld = h
        .wait_status("wr", "probing", MINUTE, |ld| {
            condition_is(ld, "ArchiveWritable", "Unknown")
        })
        .await;
    assert_eq!(condition_reason(&ld, "ArchiveWritable"), "Probing");

    // Let onto the node (the operator restarted with the node's pod
    // defaults), the pod runs with the writer's normal credentials.
    h.kill().await;
    h.on_node().await;
    h.start();
    let good = ready_pod(&h, "wr").await;
    let ld = h
        .wait_status("wr", "archive writable and ready", MINUTE, |ld| {
            condition_is(ld, "ArchiveWritable", "True") && condition_is(ld, "Ready", "True")
        })
        .await;
    assert_eq!(condition_reason(&ld, "ArchiveWritable"), "Writable");
    let msg = condition(&ld, "ArchiveWritable")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        msg.contains(&format!("s3://{}/{probes}", h.env.bucket)),
        "{msg}"
    );
    let metrics = pod_metrics(&good).await;
    assert!(
        metrics.contains("drainpipe_archive_writable 1"),
        "{metrics}"
    );
    // The probe object was deleted again, and nothing else was written.
    assert_eq!(keys(&h, &prefix).await, Vec::<String>::new());

    // The same pod with credentials that may read the bucket but not write.
    let read_only = h
        .env
        .minio_session_credentials(&policy(&h.env.bucket, &["s3:GetObject", "s3:ListBucket"]))
        .await;
    let secrets = [
        read_only.access_key_id().to_string(),
        read_only.secret_access_key().to_string(),
        read_only.session_token().unwrap_or_default().to_string(),
        h.env.secret_key.clone(),
    ];
    let denied = restart_pod_with(&h, "wr", &read_only).await;
    let ld = h
        .wait_status("wr", "archive not writable", MINUTE, |ld| {
            condition_is(ld, "ArchiveWritable", "False")
        })
        .await;
    assert_eq!(condition_reason(&ld, "ArchiveWritable"), "WriteDenied");
    let msg = condition(&ld, "ArchiveWritable")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        msg.contains(&format!(
            "s3:PutObject to s3://{}/{prefix} denied (AccessDenied)",
            h.env.bucket
        )),
        "{msg}"
    );
    // Folded into Ready: the pod is available, the drains registered.
    assert!(
        condition_is(&ld, "IngesterAvailable", "True"),
        "{:?}",
        ld.status
    );
    let ready = condition(&ld, "Ready").expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "WriteDenied")
    );
    let metrics = pod_metrics(&denied).await;
    assert!(
        metrics.contains("drainpipe_archive_writable 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("action=\"s3:PutObject\",code=\"AccessDenied\""),
        "{metrics}"
    );
    let status = serde_json::to_string(&ld.status).expect("status json");
    for secret in &secrets {
        assert!(
            !status.contains(secret.as_str()),
            "a credential in the status"
        );
        assert!(
            !metrics.contains(secret.as_str()),
            "a credential in the metrics"
        );
    }

    // Credentials that may write but not delete: writable, the probe object
    // stays (one per process), and the message says so.
    let no_delete = h
        .env
        .minio_session_credentials(&policy(
            &h.env.bucket,
            &["s3:GetObject", "s3:ListBucket", "s3:PutObject"],
        ))
        .await;
    restart_pod_with(&h, "wr", &no_delete).await;
    let ld = h
        .wait_status("wr", "writable without delete", MINUTE, |ld| {
            condition(ld, "ArchiveWritable")
                .is_some_and(|c| c.status == "True" && c.message.contains("deleting it was denied"))
        })
        .await;
    let msg = condition(&ld, "ArchiveWritable")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("(s3:DeleteObject)"), "{msg}");
    let left = keys(&h, &prefix).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with(&probes), "{left:?}");
    h.env
        .s3_client()
        .delete_object()
        .bucket(&h.env.bucket)
        .key(&left[0])
        .send()
        .await
        .expect("remove the probe object left behind");
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drifted_drain_is_reported_and_repaired() {
    use drainpipe_tests::operator::routes_accept;
    use futures::StreamExt;
    use kube::runtime::watcher;
    let mut h = harness("drift", &["drift-web"]).await;
    // Drains are checked with Heroku again after half a resync.
    h.settings.resync = Duration::from_secs(2);
    h.start();
    h.apply("dr", h.spec(&["drift-web"], None)).await;
    let ld = h.wait_drains_registered("dr", &["drift-web"]).await;
    let password = h.drain_password("dr").await;
    let before = status_drains(&ld)[0].clone();

    // Every DrainsRegistered the status goes through, from now on.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let watch = {
        let seen = seen.clone();
        let stream = watcher(
            h.logdrains(),
            watcher::Config::default().fields("metadata.name=dr"),
        );
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(event)) = stream.next().await {
                if let watcher::Event::Apply(ld) | watcher::Event::InitApply(ld) = event
                    && let Some(c) = condition(&ld, "DrainsRegistered")
                {
                    let mut seen = seen.lock().expect("lock");
                    seen.push((c.reason.clone(), c.message.clone()));
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // drainpipe's drain now carries the right host but a wrong password.
    let wrong = "https://drainpipe:not-the-password@logs.example.com/logplex/drift-web";
    assert!(h.heroku.set_drain_url("drift-web", &before.id, wrong));

    let drifted = drainpipe_tests::operator::wait_for("the Drifted reason", MINUTE, || {
        let seen = seen.clone();
        async move {
            let seen = seen.lock().ok()?;
            seen.iter().find(|(r, _)| r == "Drifted").cloned()
        }
    })
    .await;
    watch.abort();
    let msg = drifted.1;
    assert!(
        msg.contains(&format!(
            "drift-web: drain {}'s password differs from the routes Secret",
            before.id
        )),
        "{msg}"
    );
    assert!(
        !msg.contains("not-the-password") && !msg.contains(&password),
        "{msg}"
    );

    // Repaired: one drain, a new one, with the password the ingesters accept.
    let ld = h
        .wait_status("dr", "repaired", MINUTE, |ld| {
            condition_reason(ld, "DrainsRegistered") == "DrainsRegistered"
                && status_drains(ld).first().is_some_and(|d| d.id != before.id)
        })
        .await;
    let drains = h.heroku.drains("drift-web");
    assert_eq!(drains.len(), 1, "{drains:?}");
    assert_ne!(drains[0].id, before.id);
    assert_eq!(status_drains(&ld)[0].id, drains[0].id);
    drainpipe_tests::operator::wait_for("routes pin the new drain", MINUTE, || {
        let h = &h;
        let d = drains[0].clone();
        async move {
            let routes = h.routes("dr").await?;
            routes_accept(&routes, "drift-web", &d.url, &d.token).then_some(())
        }
    })
    .await;
    // The drift is a warning event; the repair the drain sync's own events:
    // a second DrainCreated (the first registered the drain) and the
    // drifted drain's DrainReplaced.
    let reasons = h.event_reasons("dr").await;
    let count = |r: &str| reasons.iter().filter(|x| *x == r).count();
    assert_eq!(count("DrainDrifted"), 1, "{reasons:?}");
    assert_eq!(count("DrainCreated"), 2, "{reasons:?}");
    assert_eq!(count("DrainReplaced"), 1, "{reasons:?}");
    h.teardown().await;
}
