//! The runtime conformance suite against `FakeRuntime`.

use sluice_agent::runtime::conformance::{self, ConformanceContext};
use sluice_agent::runtime::fake::{FakeRuntime, Op};
use sluice_agent::runtime::ContainerRuntime;
use sluice_common::{DesiredInstance, DesiredState, FunctionName, FunctionSpec, ImageRef, InstanceId, NodeId};

fn context() -> ConformanceContext {
    let spec = FunctionSpec::new(FunctionName::new("hello").unwrap(), ImageRef::parse("sluice/hello:latest").unwrap());
    let template = DesiredInstance { id: InstanceId(1000), spec, state: DesiredState::Running };
    ConformanceContext::new(NodeId::new("conformance").unwrap(), template, false)
}

fn runtime(ctx: &ConformanceContext) -> FakeRuntime {
    FakeRuntime::with_images([ctx.template.spec.image.clone()])
}

#[tokio::test]
async fn fake_runtime_conforms() {
    let ctx = context();
    let rt = runtime(&ctx);
    conformance::run_all(&rt, &ctx).await.unwrap();
    assert!(rt.containers().is_empty(), "every check cleans up: {:?}", rt.containers());
}

/// The suite must be able to fail: a runtime whose listing breaks fails the checks that list.
#[tokio::test]
async fn suite_catches_a_broken_runtime() {
    let ctx = context();
    let rt = runtime(&ctx);
    rt.fail_next(Op::List, 1000);
    let failures = conformance::run_all(&rt, &ctx).await.unwrap_err().0;
    let failed: Vec<_> = failures.iter().map(|f| f.check).collect();
    assert!(failed.contains(&"start_ready_and_list"), "{failed:?}");
    assert!(failed.contains(&"list_shows_only_this_node"), "{failed:?}");
    assert!(!failed.contains(&"unknown_containers_are_not_found"), "{failed:?}");
}

/// A runtime without the image fails the checks that start containers.
#[tokio::test]
async fn suite_needs_the_template_image() {
    let ctx = context();
    let rt = FakeRuntime::new();
    let failures = conformance::run_all(&rt, &ctx).await.unwrap_err();
    assert!(failures.to_string().contains("ensure_image failed"), "{failures}");
    // The fake's list still works, so leftovers would show here.
    assert!(rt.list(&ctx.node).await.unwrap().is_empty());
}
