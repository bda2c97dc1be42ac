//! The Helm chart against the real kube-apiserver: lint, render and validate
//! server-side, install, upgrade, uninstall, and the examples/ manifests.

use std::path::{Path, PathBuf};
use std::process::Command;

use drainpipe_tests::env::TestEnv;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use kube::{Client, ResourceExt};
use serde::Deserialize;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn chart_dir() -> PathBuf {
    repo_root().join("charts/drainpipe")
}

/// Runs helm with the test environment's kubeconfig; panics with helm's
/// output when it fails.
fn helm(env: &TestEnv, args: &[&str]) -> String {
    let out = Command::new(&env.helm)
        .args(args)
        .env("KUBECONFIG", &env.kubeconfig)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", env.helm.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "helm {} failed ({}):\n{}\n{}",
        args.join(" "),
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

async fn create_namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
}

fn parse_documents(yaml: &str) -> Vec<DynamicObject> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|doc| {
            let value = serde_yaml::Value::deserialize(doc).expect("valid YAML document");
            (!value.is_null()).then(|| {
                serde_yaml::from_value::<DynamicObject>(value).expect("a Kubernetes object")
            })
        })
        .collect()
}

/// Server-side dry-run apply of every object: the API server validates it
/// against its schema (and, for LogDrains, the CRD's rules) and stores
/// nothing.
async fn dry_run_apply(client: &Client, objects: &[DynamicObject], default_ns: &str) {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("API discovery");
    for obj in objects {
        let types = obj.types.as_ref().expect("object has apiVersion and kind");
        let gvk = GroupVersionKind::try_from(types).expect("valid apiVersion");
        let (resource, caps) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("the API server does not serve {gvk:?}"));
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                obj.metadata.namespace.as_deref().unwrap_or(default_ns),
                &resource,
            ),
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let name = obj.name_any();
        api.patch(
            &name,
            &PatchParams::apply("drainpipe-tests").dry_run().force(),
            &Patch::Apply(obj),
        )
        .await
        .unwrap_or_else(|e| panic!("API server rejected {} {name}: {e}", types.kind));
    }
}

/// The values file that sets every knob of the chart.
fn all_values() -> String {
    chart_dir()
        .join("ci/all-values.yaml")
        .to_str()
        .expect("utf-8 path")
        .to_string()
}

fn kinds_of(objects: &[DynamicObject]) -> Vec<&str> {
    objects
        .iter()
        .filter_map(|o| o.types.as_ref().map(|t| t.kind.as_str()))
        .collect()
}

fn find<'a>(objects: &'a [DynamicObject], kind: &str) -> &'a DynamicObject {
    objects
        .iter()
        .find(|o| o.types.as_ref().is_some_and(|t| t.kind == kind))
        .unwrap_or_else(|| panic!("no {kind} rendered: {:?}", kinds_of(objects)))
}

fn typed<T: serde::de::DeserializeOwned>(obj: &DynamicObject) -> T {
    serde_json::from_value(serde_json::to_value(obj).expect("object as JSON"))
        .expect("rendered object has the Kubernetes type's shape")
}

/// The value of the container's environment variable `name`.
fn env_value(c: &k8s_openapi::api::core::v1::Container, name: &str) -> String {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| panic!("no {name} in the {} container's environment", c.name))
}

#[test]
fn chart_crds_are_the_generated_crds() {
    let generated = std::fs::read_to_string(repo_root().join("crds/logdrain.yaml"))
        .expect("crds/logdrain.yaml");
    let in_chart = std::fs::read_to_string(chart_dir().join("files/crds/logdrain.yaml"))
        .expect("charts/drainpipe/files/crds/logdrain.yaml");
    assert!(
        generated == in_chart,
        "charts/drainpipe/files/crds/logdrain.yaml differs from crds/logdrain.yaml: copy it \
         (cp crds/logdrain.yaml charts/drainpipe/files/crds/)"
    );
}

/// The chart runs the images of its own release: its version and
/// appVersion are the workspace version, which scripts/image tags the
/// images with and the release workflow checks against the tag.
#[test]
fn chart_version_and_app_version_are_the_workspace_version() {
    #[derive(Deserialize)]
    struct Chart {
        version: String,
        #[serde(rename = "appVersion")]
        app_version: String,
    }
    let chart: Chart = serde_yaml::from_str(
        &std::fs::read_to_string(chart_dir().join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml");
    let workspace = env!("CARGO_PKG_VERSION");
    assert_eq!(chart.app_version, workspace, "Chart.yaml appVersion");
    assert_eq!(chart.version, workspace, "Chart.yaml version");
}

/// Helm never upgrades a chart's crds/, so the CRD is a template: rendered
/// unchanged (and kept on uninstall) by default, left out with
/// crds.enabled=false.
#[test]
fn chart_templates_the_crd_with_the_keep_policy() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let env = TestEnv::require();
    let chart = chart_dir();
    let chart = chart.to_str().expect("utf-8 path");
    assert!(
        !chart_dir().join("crds").exists(),
        "charts/drainpipe/crds/ is installed once and never upgraded by Helm, and conflicts with templates/crds.yaml"
    );
    let generated: CustomResourceDefinition = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("crds/logdrain.yaml"))
            .expect("crds/logdrain.yaml"),
    )
    .expect("CRD YAML");

    let rendered = parse_documents(&helm(&env, &["template", "dp", chart]));
    let crd: CustomResourceDefinition = typed(find(&rendered, "CustomResourceDefinition"));
    assert_eq!(
        crd.spec, generated.spec,
        "the chart's CRD is not crds/logdrain.yaml"
    );
    assert_eq!(crd.metadata.name, generated.metadata.name);
    let annotations = crd.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("helm.sh/resource-policy")
            .map(String::as_str),
        Some("keep")
    );
    let labels = crd.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("Helm")
    );

    let not_kept = parse_documents(&helm(
        &env,
        &["template", "dp", chart, "--set", "crds.keep=false"],
    ));
    let crd: CustomResourceDefinition = typed(find(&not_kept, "CustomResourceDefinition"));
    assert!(
        !crd.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("helm.sh/resource-policy")
    );

    let without = parse_documents(&helm(
        &env,
        &["template", "dp", chart, "--set", "crds.enabled=false"],
    ));
    assert!(
        !kinds_of(&without).contains(&"CustomResourceDefinition"),
        "crds.enabled=false still renders the CRD"
    );
}

#[test]
fn chart_lints_strictly() {
    let env = TestEnv::require();
    let out = helm(
        &env,
        &[
            "lint",
            "--strict",
            chart_dir().to_str().expect("utf-8 path"),
        ],
    );
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn values_schema_rejects_unknown_and_invalid_values() {
    let env = TestEnv::require();
    let chart = chart_dir();
    for bad in [
        "operator.replicaz=2",
        "operator.logFormat=xml",
        "operator.resync=ten minutes",
        "watchNamespaces={Not_A_Namespace}",
        "operator.image.digest=latest",
        "operator.leaderElection.leaseDuration=forever",
        "ingester.image.pullPolicy=Sometimes",
        "ingester.nodeSelecter.pool=logs",
        "imagePullSecrets[0].nam=registry",
        "crds.install=true",
    ] {
        let out = Command::new(&env.helm)
            .args([
                "template",
                "t",
                chart.to_str().expect("utf-8"),
                "--set",
                bad,
            ])
            .output()
            .expect("run helm");
        assert!(!out.status.success(), "helm accepted --set {bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("values don't meet the specifications"),
            "--set {bad}: {stderr}"
        );
    }
}

#[test]
fn leader_election_off_needs_one_replica() {
    let env = TestEnv::require();
    let out = Command::new(&env.helm)
        .args(["template", "t", chart_dir().to_str().expect("utf-8")])
        .args(["--set", "operator.leaderElection.enabled=false"])
        .args(["--set", "operator.replicas=2"])
        .output()
        .expect("run helm");
    assert!(
        !out.status.success(),
        "two replicas without leader election rendered"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs operator.replicas=1"), "{stderr}");
}

#[tokio::test]
async fn rendered_chart_is_accepted_by_the_api_server() {
    let env = TestEnv::require();
    let client = env.kube_client().await;
    let chart = chart_dir();
    let chart = chart.to_str().expect("utf-8 path");
    let release_ns = format!("dp-chart-{}", suffix());
    let watched = format!("dp-team-{}", suffix());
    create_namespace(&client, &release_ns).await;
    create_namespace(&client, &watched).await;

    // Defaults: cluster-wide RBAC.
    let default = parse_documents(&helm(&env, &["template", "dp", chart, "-n", &release_ns]));
    let kinds = kinds_of(&default);
    for kind in [
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "Service",
    ] {
        assert!(
            kinds.contains(&kind),
            "default render lacks a {kind}: {kinds:?}"
        );
    }
    dry_run_apply(&client, &default, &release_ns).await;

    // Non-default: namespaced RBAC, PDB, extra env, two replicas.
    let custom = parse_documents(&helm(
        &env,
        &[
            "template",
            "dp",
            chart,
            "-n",
            &release_ns,
            "--set",
            &format!("watchNamespaces={{{watched}}}"),
            "--set",
            "podDisruptionBudget.enabled=true",
            "--set",
            "operator.replicas=2",
            "--set",
            "operator.extraEnv[0].name=AWS_REGION",
            "--set",
            "operator.extraEnv[0].value=eu-west-1",
            "--set",
            "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/drainpipe",
        ],
    ));
    let kinds = kinds_of(&custom);
    assert!(
        !kinds.contains(&"ClusterRole"),
        "watchNamespaces must not need a ClusterRole: {kinds:?}"
    );
    assert!(kinds.contains(&"PodDisruptionBudget"), "{kinds:?}");
    let team_role = custom.iter().find(|o| {
        o.types.as_ref().is_some_and(|t| t.kind == "Role")
            && o.namespace().as_deref() == Some(watched.as_str())
    });
    assert!(
        team_role.is_some(),
        "no Role in the watched namespace {watched}"
    );
    dry_run_apply(&client, &custom, &release_ns).await;

    // Every knob at once (ci/all-values.yaml).
    let all = parse_documents(&helm(
        &env,
        &[
            "template",
            "dp",
            chart,
            "-n",
            &release_ns,
            "-f",
            &all_values(),
        ],
    ));
    for kind in [
        "CustomResourceDefinition",
        "PodDisruptionBudget",
        "ConfigMap",
        "NetworkPolicy",
    ] {
        assert!(
            kinds_of(&all).contains(&kind),
            "no {kind}: {:?}",
            kinds_of(&all)
        );
    }
    let deploy: k8s_openapi::api::apps::v1::Deployment = typed(find(&all, "Deployment"));
    let pod = deploy.spec.and_then(|s| s.template.spec).expect("pod spec");
    let secrets: Vec<&str> = pod
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(secrets, ["global-registry", "registry"]);
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-cluster-critical")
    );
    assert_eq!(pod.topology_spread_constraints.map(|t| t.len()), Some(1));
    assert!(
        pod.volumes
            .iter()
            .flatten()
            .any(|v| v.name == "aws-token" && v.projected.is_some())
    );
    let c = &pod.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some(
            "registry.example.com/drainpipe/drainpipe-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        )
    );
    assert_eq!(
        c.args.as_deref(),
        Some(&["run".to_string(), "--concurrency".into(), "32".into()][..])
    );
    assert!(
        c.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "aws-token")
    );
    let env_of = |name: &str| env_value(c, name);
    assert_eq!(env_of("DRAINPIPE_LEADER_ELECTION_LEASE_DURATION"), "30s");
    assert_eq!(env_of("DRAINPIPE_LEADER_ELECTION_RENEW_PERIOD"), "10s");
    assert_eq!(env_of("DRAINPIPE_LEADER_ELECTION_RETRY_PERIOD"), "4s");
    let pod_defaults = drainpipe_operator::resources::IngesterPodDefaults::parse(&env_of(
        "DRAINPIPE_INGESTER_POD_DEFAULTS",
    ))
    .expect("the operator accepts the chart's ingester defaults");
    assert_eq!(
        pod_defaults.priority_class_name.as_deref(),
        Some("logs-critical")
    );
    let extra = all
        .iter()
        .find(|o| o.types.as_ref().is_some_and(|t| t.kind == "ConfigMap"))
        .expect("extra ConfigMap");
    assert_eq!(
        extra.name_any(),
        "dp-drainpipe-extra",
        "extraObjects go through tpl"
    );
    dry_run_apply(&client, &all, &release_ns).await;
}

/// The chart's ingester values, as the operator gets them, shape the
/// ingester Deployment it creates for a LogDrain, and the API server takes it.
#[tokio::test]
async fn chart_ingester_defaults_reach_the_ingester_deployment() {
    use drainpipe_operator::resources::IngesterPodDefaults;
    use drainpipe_tests::heroku_fake::FakeOptions;
    use drainpipe_tests::operator::{Harness, wait_for};
    use k8s_openapi::api::apps::v1::Deployment;

    let mut h = Harness::new("chartdefaults", FakeOptions::default()).await;
    let chart = chart_dir();
    let rendered = parse_documents(&helm(
        &h.env,
        &[
            "template",
            "dp",
            chart.to_str().expect("utf-8"),
            "-f",
            &all_values(),
        ],
    ));
    let deploy: Deployment = typed(find(&rendered, "Deployment"));
    let container = deploy
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec")
        .containers
        .remove(0);
    let value = |name: &str| env_value(&container, name);
    h.settings.ingester.image = value("DRAINPIPE_INGESTER_IMAGE");
    h.settings.ingester.pod = IngesterPodDefaults::parse(&value("DRAINPIPE_INGESTER_POD_DEFAULTS"))
        .expect("chart's ingester defaults parse");
    h.heroku.add_app("defaults-web");
    h.start();
    h.apply("shop", h.spec(&["defaults-web"], None)).await;
    let deploys = Api::<Deployment>::namespaced(h.client.clone(), &h.ns);
    let deploy = wait_for(
        "the ingester Deployment",
        std::time::Duration::from_secs(30),
        || {
            let deploys = deploys.clone();
            async move { deploys.get_opt("shop-ingester").await.ok().flatten() }
        },
    )
    .await;
    let pod = deploy.spec.and_then(|s| s.template.spec).expect("pod spec");
    let c = &pod.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some(
            "registry.example.com/drainpipe/drainpipe-ingester@sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
        )
    );
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(pod.priority_class_name.as_deref(), Some("logs-critical"));
    assert_eq!(
        pod.node_selector
            .unwrap_or_default()
            .get("example.com/pool")
            .map(String::as_str),
        Some("logs")
    );
    assert_eq!(pod.tolerations.map(|t| t.len()), Some(1));
    assert!(pod.affinity.and_then(|a| a.node_affinity).is_some());
    assert_eq!(
        pod.topology_spread_constraints
            .unwrap_or_default()
            .first()
            .map(|t| t.when_unsatisfiable.clone()),
        Some("DoNotSchedule".to_string())
    );
    assert_eq!(
        pod.image_pull_secrets
            .unwrap_or_default()
            .first()
            .map(|s| s.name.clone()),
        Some("registry".to_string())
    );
    let memory = c
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .map(|q| q.0.clone());
    assert_eq!(memory.as_deref(), Some("512Mi"));
    let sc = c.security_context.as_ref().expect("security context");
    assert_eq!(sc.run_as_user, Some(10001));
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "the hardened settings stay"
    );
    let psc = pod.security_context.expect("pod security context");
    assert_eq!(psc.fs_group, Some(10001));
    assert_eq!(psc.run_as_non_root, Some(true));
    h.kill().await;
    h.teardown().await;
}

#[tokio::test]
async fn install_upgrade_uninstall_leave_nothing_but_the_crd() {
    let env = TestEnv::require();
    let client = env.kube_client().await;
    let chart = chart_dir();
    let chart = chart.to_str().expect("utf-8 path");
    let ns = format!("dp-install-{}", suffix());
    let team = format!("dp-team-{}", suffix());
    let release = format!("dp{}", suffix());
    create_namespace(&client, &team).await;

    // --take-ownership: other tests (and a cluster upgraded from an older
    // chart, see docs/operations.md) created the CRD without Helm's labels.
    helm(
        &env,
        &[
            "install",
            &release,
            chart,
            "-n",
            &ns,
            "--create-namespace",
            "--take-ownership",
        ],
    );
    let selector = format!("app.kubernetes.io/instance={release}");
    let lp = ListParams::default().labels(&selector);
    let crr = Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(client.clone());
    assert_eq!(
        crr.list(&lp).await.expect("list ClusterRoles").items.len(),
        1
    );
    let deploys = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns);
    let d = deploys.list(&lp).await.expect("list Deployments").items;
    assert_eq!(d.len(), 1, "one operator Deployment");
    let pod = d[0]
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    let c = &pod.containers[0];
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        pod.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );
    assert!(c.liveness_probe.is_some() && c.readiness_probe.is_some());
    let crds = Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(client.clone());
    let crd = crds
        .get("logdrains.drainpipe.dev")
        .await
        .expect("the chart installed the CRD");
    assert_eq!(
        crd.annotations().get("meta.helm.sh/release-name"),
        Some(&release),
        "the release owns the CRD"
    );

    // The CRD upgrade path: a cluster holding an older CRD (here: one
    // without printer columns) gets the chart's on `helm upgrade`.
    let columns = |crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
        crd.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .map_or(0, Vec::len)
    };
    assert!(columns(&crd) > 0, "the chart's CRD has printer columns");
    let mut older = crd.clone();
    older.spec.versions[0].additional_printer_columns = None;
    crds.replace("logdrains.drainpipe.dev", &PostParams::default(), &older)
        .await
        .expect("make the CRD an older one");

    // Upgrade to namespaced RBAC: the ClusterRole goes, a Role appears.
    helm(
        &env,
        &[
            "upgrade",
            &release,
            chart,
            "-n",
            &ns,
            "--set",
            &format!("watchNamespaces={{{team}}}"),
        ],
    );
    let upgraded = crds.get("logdrains.drainpipe.dev").await.expect("CRD");
    assert_eq!(
        columns(&upgraded),
        columns(&crd),
        "helm upgrade did not bring the CRD up to the chart's"
    );
    assert!(
        crr.list(&lp).await.expect("list").items.is_empty(),
        "ClusterRole left after upgrade"
    );
    let roles = Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(client.clone(), &team);
    assert_eq!(roles.list(&lp).await.expect("list Roles").items.len(), 1);

    helm(&env, &["uninstall", &release, "-n", &ns, "--wait"]);
    let left = leftovers(&client, &ns, &team, &lp).await;
    assert!(left.is_empty(), "helm uninstall left: {left:?}");
    crds.get("logdrains.drainpipe.dev")
        .await
        .expect("CRDs are kept by design");
}

async fn leftovers(client: &Client, ns: &str, team: &str, lp: &ListParams) -> Vec<String> {
    use k8s_openapi::api::{
        apps::v1::Deployment,
        core::v1::{Service, ServiceAccount},
        rbac::v1::*,
    };
    let mut left = Vec::new();
    let names = |kind: &str, items: Vec<String>| {
        items
            .into_iter()
            .map(|n| format!("{kind}/{n}"))
            .collect::<Vec<_>>()
    };
    macro_rules! collect {
        ($api:expr, $kind:literal) => {
            left.extend(names(
                $kind,
                $api.list(lp)
                    .await
                    .expect($kind)
                    .items
                    .iter()
                    .map(|o| o.name_any())
                    .collect(),
            ));
        };
    }
    collect!(Api::<ClusterRole>::all(client.clone()), "ClusterRole");
    collect!(
        Api::<ClusterRoleBinding>::all(client.clone()),
        "ClusterRoleBinding"
    );
    for n in [ns, team] {
        collect!(Api::<Role>::namespaced(client.clone(), n), "Role");
        collect!(
            Api::<RoleBinding>::namespaced(client.clone(), n),
            "RoleBinding"
        );
        collect!(
            Api::<Deployment>::namespaced(client.clone(), n),
            "Deployment"
        );
        collect!(Api::<Service>::namespaced(client.clone(), n), "Service");
        collect!(
            Api::<ServiceAccount>::namespaced(client.clone(), n),
            "ServiceAccount"
        );
    }
    left
}

#[tokio::test]
async fn every_example_is_accepted_by_the_api_server() {
    let env = TestEnv::require();
    let client = env.kube_client().await;
    install_crd(&client).await;
    let dir = repo_root().join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected the three example LogDrains, found {files:?}"
    );
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read example");
        let mut objects = parse_documents(&text);
        // Each example names its own namespace; test them in fresh ones.
        let ns = format!("dp-example-{}", suffix());
        create_namespace(&client, &ns).await;
        for o in &mut objects {
            o.metadata.namespace = Some(ns.clone());
        }
        assert!(!objects.is_empty(), "{} holds no object", file.display());
        dry_run_apply(&client, &objects, &ns).await;
    }
}

async fn install_crd(client: &Client) {
    install_crd_file(client, "crds/logdrain.yaml", "logdrains.drainpipe.dev").await;
}

/// Applies the CRD in `path` (relative to the repository root) and waits
/// until `name` is Established.
async fn install_crd_file(client: &Client, path: &str, name: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&std::fs::read_to_string(repo_root().join(path)).expect(path))
            .expect("CRD YAML");
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    api.patch(
        name,
        &PatchParams::apply("drainpipe-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply CRD");
    // Established before objects of the kind can be created.
    for _ in 0..100 {
        let c = api.get(name).await.expect("get CRD");
        let established = c
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("CRD {name} not Established after 10 s");
}

/// A client that authenticates as `ServiceAccount` `sa` of `ns` with a token
/// from the TokenRequest API, as the operator pod would.
async fn service_account_client(env: &TestEnv, admin: &Client, ns: &str, sa: &str) -> Client {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {ns}/{sa}: {e}"))
        .status
        .and_then(|s| s.token)
        .expect("TokenRequest returned a token");
    let kubeconfig = kube::config::Kubeconfig::read_from(&env.kubeconfig).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.auth_info = kube::config::AuthInfo {
        token: Some(secrecy::SecretString::from(token)),
        ..Default::default()
    };
    Client::try_from(config).expect("client with the ServiceAccount token")
}

fn is_forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(ref s)) if s.code == 403)
}

#[tokio::test]
async fn chart_rbac_runs_a_full_reconcile_and_nothing_more() {
    use drainpipe_tests::heroku_fake::FakeOptions;
    use drainpipe_tests::operator::{Harness, condition_is};
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Pod, Secret};

    let mut h = Harness::new("rbac", FakeOptions::default()).await;
    let release = format!("dp{}", suffix());
    let chart = chart_dir();
    // Namespaced RBAC: the operator may act in the test namespace only.
    helm(
        &h.env,
        &[
            "install",
            &release,
            chart.to_str().expect("utf-8"),
            "-n",
            &h.ns,
            "--set",
            &format!("watchNamespaces={{{}}}", h.ns),
            // A second release in the cluster leaves the CRD to the first.
            "--set",
            "crds.enabled=false",
        ],
    );
    let sa = format!("{release}-drainpipe");
    let operator = service_account_client(&h.env, &h.client, &h.ns, &sa).await;

    // Leader election with the chart's identity: the Lease is allowed.
    let lease =
        drainpipe_operator::leader::LeaseConfig::new(h.ns.clone(), sa.clone(), "rbac-test".into());
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        drainpipe_operator::leader::acquire(&operator, &lease),
    )
    .await
    .expect("the chart's ServiceAccount acquires the leader Lease");

    for app in ["rbac-web", "rbac-worker"] {
        h.heroku.add_app(app);
    }
    h.start_as(operator.clone());
    let mut spec = h.spec(&["rbac-web", "rbac-worker"], Some("logs"));
    // The compaction CronJob and the reading of its runs, too.
    spec["archive"]["compaction"] = serde_json::json!({});
    h.apply("shop", spec).await;
    let ld = h
        .wait_drains_registered("shop", &["rbac-web", "rbac-worker"])
        .await;
    assert!(condition_is(&ld, "DrainsRegistered", "True"));
    assert_eq!(h.heroku.drains("rbac-web").len(), 1);
    let deploy = Api::<Deployment>::namespaced(h.client.clone(), &h.ns)
        .get("shop-ingester")
        .await
        .expect("the operator, as the chart's ServiceAccount, created the ingester Deployment");
    assert_eq!(deploy.spec.and_then(|s| s.replicas), Some(2));
    Api::<Secret>::namespaced(h.client.clone(), &h.ns)
        .get("shop-routes")
        .await
        .expect("routes Secret created");
    drainpipe_tests::operator::wait_for(
        "the compaction CronJob, applied with the chart's permissions",
        std::time::Duration::from_secs(30),
        || {
            let cronjobs =
                Api::<k8s_openapi::api::batch::v1::CronJob>::namespaced(h.client.clone(), &h.ns);
            async move { cronjobs.get_opt("shop-compaction").await.ok()? }
        },
    )
    .await;
    assert!(
        !h.event_reasons("shop").await.is_empty(),
        "events recorded with the chart's permissions"
    );

    // Least privilege, shown: what the operator never needs is refused.
    // Pods are read (ArchiveFresh reads their IPs), never changed.
    let pods = Api::<Pod>::namespaced(operator.clone(), &h.ns);
    assert!(pods.list(&ListParams::default()).await.is_ok());
    assert!(
        is_forbidden(
            pods.delete_collection(&Default::default(), &ListParams::default())
                .await
        ),
        "may delete pods"
    );
    // Deployments are deleted (a LogDrain switching to a claim buffer gets
    // a StatefulSet instead), but claims only come from the StatefulSet
    // controller: the operator reads and deletes them, never makes one.
    let budget = Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(
        h.client.clone(),
        &h.ns,
    );
    assert!(
        budget.get("shop-ingester").await.is_ok(),
        "the budget of 2 replicas, applied with the chart's permissions"
    );
    let claims = Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(
        operator.clone(),
        &h.ns,
    );
    let claim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "not-the-operators"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .expect("claim object");
    assert!(
        is_forbidden(claims.create(&Default::default(), &claim).await),
        "may create PersistentVolumeClaims"
    );
    // spec.ingester.autoscaling: the scale subresource and HPAs are allowed.
    let deploys = Api::<Deployment>::namespaced(operator.clone(), &h.ns);
    deploys
        .patch_scale(
            "shop-ingester",
            &PatchParams::apply("drainpipe-autoscaler").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": "shop-ingester", "namespace": h.ns},
                "spec": {"replicas": 2},
            })),
        )
        .await
        .expect("the chart's ServiceAccount scales the ingester Deployment");
    let hpas = Api::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>::namespaced(
        operator.clone(),
        &h.ns,
    );
    assert!(
        hpas.get_opt("shop-ingester").await.is_ok(),
        "the chart's ServiceAccount reads HorizontalPodAutoscalers"
    );
    let elsewhere = Api::<Secret>::namespaced(operator.clone(), "kube-system");
    assert!(
        is_forbidden(elsewhere.list(&ListParams::default()).await),
        "may read Secrets outside watchNamespaces"
    );
    let all = Api::<drainpipe_operator::crd::LogDrain>::all(operator.clone());
    assert!(
        is_forbidden(all.list(&ListParams::default()).await),
        "may list LogDrains cluster-wide"
    );

    h.kill().await;
    helm(&h.env, &["uninstall", &release, "-n", &h.ns]);
    h.teardown().await;
}

/// The Prometheus Operator's PrometheusRule CRD, vendored pinned (see
/// tests/testdata/prometheus-operator/README.md).
const PROMETHEUS_RULE_CRD: &str =
    "tests/testdata/prometheus-operator/monitoring.coreos.com_prometheusrules.yaml";

#[tokio::test]
async fn prometheus_rule_is_off_by_default_and_valid_against_the_operators_crd() {
    let env = TestEnv::require();
    let client = env.kube_client().await;
    let chart = chart_dir();
    let chart = chart.to_str().expect("utf-8 path");
    let kinds = |objects: &[DynamicObject]| -> Vec<String> {
        objects
            .iter()
            .filter_map(|o| o.types.as_ref().map(|t| t.kind.clone()))
            .collect()
    };
    let default = parse_documents(&helm(&env, &["template", "dp", chart]));
    assert!(!kinds(&default).iter().any(|k| k == "PrometheusRule"));

    install_crd_file(
        &client,
        PROMETHEUS_RULE_CRD,
        "prometheusrules.monitoring.coreos.com",
    )
    .await;
    let ns = format!("dp-rules-{}", suffix());
    create_namespace(&client, &ns).await;
    let rendered = parse_documents(&helm(
        &env,
        &[
            "template",
            "dp",
            chart,
            "-n",
            &ns,
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "prometheusRule.labels.release=kube-prometheus",
            "--set",
            "prometheusRule.archiveStaleSeconds=3600",
        ],
    ));
    let rules: Vec<&DynamicObject> = rendered
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "PrometheusRule"))
        .collect();
    assert_eq!(rules.len(), 1);
    let rule = rules[0];
    assert_eq!(
        rule.labels().get("release").map(String::as_str),
        Some("kube-prometheus")
    );
    let alerts: Vec<(String, String)> = rule.data["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                r["alert"].as_str().unwrap_or_default().to_string(),
                r["expr"].as_str().unwrap_or_default().trim().to_string(),
            )
        })
        .collect();
    let names: Vec<&str> = alerts.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        names,
        [
            "DrainpipeArchiveStale",
            "DrainpipeIngester503s",
            "DrainpipeWalNearlyFull",
            "DrainpipeLogplexDrops",
            "DrainpipeArchiveNotWritable"
        ]
    );
    // The thresholds come from the values and name metrics the ingester exports.
    assert!(alerts[0].1.ends_with("> 3600"), "{}", alerts[0].1);
    for (alert, metric) in [
        (0, "drainpipe_archive_last_object_timestamp_seconds"),
        (1, "drainpipe_http_requests_total{status=\"503\"}"),
        (2, "drainpipe_wal_max_bytes"),
        (3, "drainpipe_logplex_dropped_messages_total"),
        (4, "drainpipe_archive_writable == 0"),
    ] {
        assert!(alerts[alert].1.contains(metric), "{}", alerts[alert].1);
    }
    // The API server validates the object against the vendored CRD's schema.
    dry_run_apply(&client, std::slice::from_ref(rule), &ns).await;
    // ...and would refuse a malformed rule: the check is not vacuous.
    let mut broken = rule.clone();
    broken.data["spec"]["groups"][0]["rules"][0]["for"] = serde_json::json!("ten minutes");
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule"),
            "prometheusrules",
        ),
    );
    let err = api
        .patch(
            &broken.name_any(),
            &PatchParams::apply("drainpipe-tests").dry_run().force(),
            &Patch::Apply(&broken),
        )
        .await
        .expect_err("a rule with an invalid duration is refused");
    assert!(err.to_string().contains("for"), "{err}");
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &Default::default())
        .await;
}
