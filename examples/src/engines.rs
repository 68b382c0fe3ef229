//! The one place the examples name a backend: which engines this build has
//! (cargo features `etcd`, `openraft`) and how to run a job with one of
//! them.
//!
//! [`Factory`] has a generic method (`create` is generic over the state
//! machine), so it cannot be a trait object; a job instead implements
//! [`WithFactory`], and [`with_factory`] hands it the concrete factory.
//! `kv` and `bench` name engines by string only.

use std::future::Future;

use raftengine::Factory;

/// Every engine the examples know, compiled in or not.
pub const KNOWN: &[&str] = &["etcd", "openraft"];

/// The engines this build has, in [`KNOWN`]'s order.
pub const COMPILED: &[&str] = &[
    #[cfg(feature = "etcd")]
    "etcd",
    #[cfg(feature = "openraft")]
    "openraft",
];

/// Work to do with one engine's factory, whichever it is.
pub trait WithFactory {
    /// What the work returns.
    type Output;

    /// Runs the work with `factory`, the engine called `name`.
    fn run<F: Factory + Clone>(
        self,
        name: &'static str,
        factory: F,
    ) -> impl Future<Output = Self::Output>;
}

/// Runs `job` with the default factory of the engine called `name`.
///
/// # Errors
///
/// A message naming the cargo feature when the engine is known but not
/// compiled in, or listing the known engines when it is unknown.
#[cfg_attr(
    not(any(feature = "etcd", feature = "openraft")),
    allow(
        unused_variables,
        reason = "no engine compiled in: the job is never run"
    )
)]
pub async fn with_factory<J: WithFactory>(name: &str, job: J) -> Result<J::Output, String> {
    match name {
        #[cfg(feature = "etcd")]
        "etcd" => Ok(job
            .run("etcd", raftengine_etcd::EtcdFactory::default())
            .await),
        #[cfg(feature = "openraft")]
        "openraft" => Ok(job
            .run("openraft", raftengine_openraft::OpenraftFactory::default())
            .await),
        known if KNOWN.contains(&known) => Err(format!(
            "engine {known} is not compiled in (build with the cargo feature `{known}`)"
        )),
        other => Err(format!(
            "unknown engine {other:?} (known: {})",
            KNOWN.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Name;

    impl WithFactory for Name {
        type Output = &'static str;

        async fn run<F: Factory + Clone>(self, name: &'static str, factory: F) -> &'static str {
            assert_eq!(factory.engine_type(), name);
            name
        }
    }

    #[tokio::test]
    async fn every_compiled_engine_is_reachable_by_its_name() {
        for name in COMPILED {
            assert_eq!(with_factory(name, Name).await, Ok(*name));
        }
        let unknown = with_factory("zookeeper", Name).await.unwrap_err();
        assert!(unknown.contains("known: etcd, openraft"), "{unknown}");
    }
}
