//! The `a{sv}` options some methods take.

use std::collections::HashMap;

use zbus::OwnedVariant as OwnedValue;

use super::error::Error;

/// The `a{sv}` options of a call: typed getters; unknown keys refused.
pub(super) struct Options(HashMap<String, OwnedValue>);

impl Options {
    pub(super) fn new(
        options: HashMap<String, OwnedValue>,
        known: &[&str],
    ) -> Result<Options, Error> {
        if let Some(unknown) = options.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(Error::InvalidArgument(format!(
                "unknown option '{unknown}'; known: {}",
                known.join(", ")
            )));
        }
        Ok(Options(options))
    }

    pub(super) fn string(&self, key: &str) -> Result<Option<String>, Error> {
        self.0
            .get(key)
            .map(|v| {
                String::try_from(v.clone())
                    .map_err(|_| Error::InvalidArgument(format!("option '{key}' must be a string")))
            })
            .transpose()
    }

    pub(super) fn boolean(&self, key: &str) -> Result<bool, Error> {
        self.0.get(key).map_or(Ok(false), |v| {
            bool::try_from(v.clone())
                .map_err(|_| Error::InvalidArgument(format!("option '{key}' must be a boolean")))
        })
    }

    pub(super) fn unsigned(&self, key: &str) -> Result<Option<u32>, Error> {
        self.0
            .get(key)
            .map(|v| {
                u32::try_from(v.clone()).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "option '{key}' must be an unsigned 32-bit integer"
                    ))
                })
            })
            .transpose()
    }

    /// A `t` value, or a `u` one (busctl and other clients pick either).
    pub(super) fn u64(&self, key: &str) -> Result<Option<u64>, Error> {
        self.0
            .get(key)
            .map(|v| {
                u64::try_from(v.clone())
                    .or_else(|_| u32::try_from(v.clone()).map(u64::from))
                    .map_err(|_| {
                        Error::InvalidArgument(format!("'{key}' must be an unsigned integer (t)"))
                    })
            })
            .transpose()
    }

    /// An `x` value, or an `i` one.
    pub(super) fn i64(&self, key: &str) -> Result<Option<i64>, Error> {
        self.0
            .get(key)
            .map(|v| {
                i64::try_from(v.clone())
                    .or_else(|_| i32::try_from(v.clone()).map(i64::from))
                    .map_err(|_| Error::InvalidArgument(format!("'{key}' must be an integer (x)")))
            })
            .transpose()
    }

    pub(super) fn token(&self) -> Result<String, Error> {
        Ok(self.string("token")?.unwrap_or_default())
    }
}
