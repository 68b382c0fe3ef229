//! `with_*` setters for a backend's configuration struct.

/// Implements, for each listed field of a `#[non_exhaustive]` config
/// struct, a `with_<field>(self, value) -> Self` setter, so that a user
/// outside the crate can write
/// `EtcdConfig::default().with_tick_interval(d).with_election_tick(10)`
/// instead of mutating a `Default` value field by field. Each setter's doc
/// points at the field's, where the meaning and the default are written.
///
/// ```
/// #[derive(Debug, Default)]
/// #[non_exhaustive]
/// pub struct Knobs {
///     /// How many.
///     pub count: u32,
/// }
/// raftengine_kit::config_setters!(Knobs { with_count => count: u32 });
/// assert_eq!(Knobs::default().with_count(3).count, 3);
/// ```
#[macro_export]
macro_rules! config_setters {
    ($ty:ident { $($setter:ident => $field:ident : $fty:ty),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("Sets [`", stringify!($ty), "::", stringify!($field), "`].")]
                #[must_use]
                pub fn $setter(mut self, value: $fty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}
