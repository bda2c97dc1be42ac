//! The test kube-apiserver is a real one: CRDs are served and validated, watches stream, and the
//! controller manager turns a Deployment into a ReplicaSet and Pods.

use std::time::Duration;

use drainpipe_tests::env::TestEnv;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;

const FIELD_MANAGER: &str = "drainpipe-smoke";

/// A namespace per test so reruns against a long-lived environment never collide.
async fn scratch_namespace(client: &kube::Client, purpose: &str) -> String {
    let name = format!(
        "smoke-{purpose}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": name } })).expect("namespace json");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

async fn delete_namespace(client: &kube::Client, name: &str) {
    // The namespace controller finishes the deletion in the background.
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::background())
        .await;
}

fn pinned_kubernetes_version() -> String {
    let pins = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/testenv.pins"
    ))
    .expect("read scripts/testenv.pins");
    pins.lines()
        .find_map(|l| l.strip_prefix("KUBERNETES_VERSION="))
        .expect("KUBERNETES_VERSION in scripts/testenv.pins")
        .trim()
        .to_string()
}

#[tokio::test]
async fn apiserver_reports_the_pinned_release() {
    let env = TestEnv::require();
    let client = env.kube_client().await;
    let info = client.apiserver_version().await.expect("GET /version");
    assert_eq!(info.git_version, pinned_kubernetes_version());
    assert_eq!(info.git_tree_state, "clean");
}

#[tokio::test]
async fn custom_resource_is_validated_watched_and_deleted() {
    let env = TestEnv::require();
    let client = env.kube_client().await;

    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.smoke.drainpipe.dev" },
        "spec": {
            "group": "smoke.drainpipe.dev",
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget" },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": { "size": { "type": "integer", "minimum": 1 } }
                    }}
                }}
            }]
        }
    }))
    .expect("crd json");
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    crds.patch(
        "widgets.smoke.drainpipe.dev",
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply CRD");
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(
            crds,
            "widgets.smoke.drainpipe.dev",
            conditions::is_crd_established(),
        ),
    )
    .await
    .expect("CRD established within 30s")
    .expect("watch CRD");

    let ns = scratch_namespace(&client, "crd").await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("smoke.drainpipe.dev", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);

    let start = widgets
        .list(&ListParams::default())
        .await
        .expect("list widgets");
    assert!(start.items.is_empty());
    let since = start
        .metadata
        .resource_version
        .expect("list resourceVersion");
    let mut events = widgets
        .watch(&WatchParams::default().timeout(60), &since)
        .await
        .expect("watch widgets")
        .boxed();

    // The schema is enforced by the server, not by us: a string size is refused.
    let invalid: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "smoke.drainpipe.dev/v1", "kind": "Widget",
        "metadata": { "name": "invalid" }, "spec": { "size": "big" }
    }))
    .expect("widget json");
    match widgets.create(&PostParams::default(), &invalid).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 422, "{status:?}"),
        other => panic!("a Widget with a string size must be refused with 422, got {other:?}"),
    }

    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "smoke.drainpipe.dev/v1", "kind": "Widget",
        "metadata": { "name": "first" }, "spec": { "size": 3 }
    }))
    .expect("widget json");
    widgets
        .create(&PostParams::default(), &widget)
        .await
        .expect("create widget");
    let stored = widgets.get("first").await.expect("get widget");
    assert_eq!(stored.data["spec"]["size"], 3);

    widgets
        .delete("first", &DeleteParams::default())
        .await
        .expect("delete widget");

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(30), events.try_next())
            .await
            .expect("watch event within 30s")
            .expect("watch stream")
            .expect("watch ended early");
        match event {
            WatchEvent::Added(o) => seen.push(("ADDED", o.metadata.name.unwrap_or_default())),
            WatchEvent::Deleted(o) => seen.push(("DELETED", o.metadata.name.unwrap_or_default())),
            WatchEvent::Modified(_) | WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error: {e:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            ("ADDED", "first".to_string()),
            ("DELETED", "first".to_string())
        ]
    );
    match widgets.get("first").await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 404),
        other => panic!("deleted widget still readable: {other:?}"),
    }

    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn deployment_gets_a_replicaset_and_pods_from_the_controller_manager() {
    let env = TestEnv::require();
    let client = env.kube_client().await;
    let ns = scratch_namespace(&client, "deploy").await;

    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                // No kubelet runs here, so the image is never pulled.
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1" }] }
            }
        }
    }))
    .expect("deployment json");
    let created = Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    let deployment_uid = created.metadata.uid.expect("deployment uid");

    let replica_sets = Api::<ReplicaSet>::namespaced(client.clone(), &ns);
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (rs, pod_count) = loop {
        let owned: Vec<ReplicaSet> = replica_sets
            .list(&ListParams::default())
            .await
            .expect("list replicasets")
            .items
            .into_iter()
            .filter(|rs| {
                rs.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "Deployment" && o.uid == deployment_uid)
            })
            .collect();
        let pod_count = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .expect("list pods")
            .items
            .len();
        if let [rs] = owned.as_slice()
            && pod_count == 2
        {
            break (rs.clone(), pod_count);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after 60s: {} ReplicaSets owned by the Deployment, {pod_count} pods; \
             is kube-controller-manager running? (scripts/testenv status)",
            owned.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(rs.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(pod_count, 2);

    delete_namespace(&client, &ns).await;
}
