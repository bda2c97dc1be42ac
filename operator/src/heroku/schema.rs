//! What the Platform API answers, for the fields the operator reads: a
//! log drain and the add-on or app it belongs to, and App Info with the
//! app's generation (Cedar or Fir).

use serde::Deserialize;

use super::error::HerokuError;
use super::secret::DrainUrl;

/// A log drain as the Platform API returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct Drain {
    /// Unique identifier (uuid).
    pub id: String,
    /// Logplex drain token (`d.<uuid>`): what Logplex sends as
    /// `Logplex-Drain-Token` and as HOSTNAME on syslog drains. Not a secret.
    pub token: String,
    pub url: DrainUrl,
    /// Set when an add-on made the drain; such drains can only be removed by
    /// removing the add-on, so the operator never touches them.
    #[serde(default)]
    pub addon: Option<DrainAddon>,
    #[serde(default)]
    pub app: Option<AppRef>,
    /// RFC 3339, as Heroku sent it.
    pub created_at: String,
    /// RFC 3339, as Heroku sent it.
    pub updated_at: String,
}

impl Drain {
    /// True when this drain sends to `url` (credentials included).
    pub fn targets(&self, url: &DrainUrl) -> bool {
        self.url.same_as(url)
    }
}

/// The add-on that made a drain.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DrainAddon {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub app: Option<AppRef>,
}

/// An app reference (`{"id": ..., "name": ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AppRef {
    pub id: String,
    pub name: String,
}

/// The Heroku platform generation an app runs on (App Info's
/// `generation.name`): it decides which kind of drain the app can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Generation {
    /// Logplex log drains (`/apps/{app}/log-drains`).
    Cedar,
    /// Telemetry drains only (`/telemetry-drains`, OpenTelemetry).
    Fir,
}

impl Generation {
    /// `cedar` or `fir`, as Heroku names them.
    pub fn as_str(self) -> &'static str {
        match self {
            Generation::Cedar => "cedar",
            Generation::Fir => "fir",
        }
    }

    pub fn parse(name: &str) -> Option<Generation> {
        match name {
            "cedar" => Some(Generation::Cedar),
            "fir" => Some(Generation::Fir),
            _ => None,
        }
    }
}

/// App Info (`GET /apps/{app_id_or_name}`): the fields the operator uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AppInfo {
    pub id: String,
    pub name: String,
    /// `{"id": ..., "name": "cedar" | "fir"}`; only in answers to the
    /// `version=3.sdk` variant (a plain `version=3` answer leaves it out).
    #[serde(default)]
    pub generation: Option<GenerationRef>,
}

/// App Info's `generation`: the schema's object `{"id", "name"}`, or the
/// bare name, which is how the Heroku CLI's types have it for the `sdk`
/// variant (`src/lib/types/fir.d.ts`; its `getGeneration` reads either).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum GenerationRef {
    Name(String),
    Object {
        #[serde(default)]
        name: String,
    },
}

impl GenerationRef {
    fn name(&self) -> &str {
        match self {
            GenerationRef::Name(name) | GenerationRef::Object { name } => name,
        }
    }
}

impl AppInfo {
    /// The app's generation. An answer without one, or with a name
    /// drainpipe does not know, is an error rather than a guess at which
    /// drain the app can take: taking a missing generation for Cedar is how
    /// Fir apps were once sent log drains Heroku refuses.
    pub fn generation(&self) -> Result<Generation, HerokuError> {
        match &self.generation {
            Some(g) if !g.name().is_empty() => Generation::parse(g.name()).ok_or_else(|| {
                HerokuError::InvalidResponse(format!(
                    "app {} is on Heroku generation {:?}, which drainpipe does not know (only cedar and fir)",
                    self.name,
                    g.name()
                ))
            }),
            _ => Err(HerokuError::GenerationUnknown {
                app: self.name.clone(),
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn drains_parse_from_the_schema_example() {
        let json = r#"[{
            "addon": null,
            "app": {"id": "01234567-89ab-cdef-0123-456789abcdef", "name": "example"},
            "created_at": "2012-01-01T12:00:00Z",
            "id": "01234567-89ab-cdef-0123-456789abcdef",
            "token": "d.01234567-89ab-cdef-0123-456789abcdef",
            "updated_at": "2012-01-01T12:00:00Z",
            "url": "https://example.com/drain"
        }, {
            "addon": {"id": "01234567-89ab-cdef-0123-456789abcdef", "name": "singing-swiftly-1242",
                      "app": {"id": "01234567-89ab-cdef-0123-456789abcdef", "name": "example"}},
            "created_at": "2012-01-01T12:00:00Z",
            "id": "11234567-89ab-cdef-0123-456789abcdef",
            "token": "d.11234567-89ab-cdef-0123-456789abcdef",
            "updated_at": "2012-01-01T12:00:00Z",
            "url": "syslog://logs.papertrailapp.com:1234"
        }]"#;
        let drains: Vec<Drain> = serde_json::from_str(json).unwrap();
        assert_eq!(drains.len(), 2);
        assert!(drains[0].addon.is_none());
        assert_eq!(
            drains[1].addon.as_ref().unwrap().name,
            "singing-swiftly-1242"
        );
        assert_eq!(drains[0].app.as_ref().unwrap().name, "example");
    }

    /// App Info as Heroku answers each variant (operator/testdata/heroku):
    /// only the `sdk` answer names the generation, and a missing one is no
    /// generation at all, never Cedar.
    #[test]
    fn app_info_names_the_generation_only_when_heroku_does() {
        let sdk: AppInfo =
            serde_json::from_str(include_str!("../../testdata/heroku/app-info-sdk.json")).unwrap();
        assert_eq!(sdk.id, "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(sdk.generation(), Ok(Generation::Fir));
        let v3: AppInfo =
            serde_json::from_str(include_str!("../../testdata/heroku/app-info-v3.json")).unwrap();
        assert_eq!(
            v3.generation(),
            Err(HerokuError::GenerationUnknown {
                app: "example".into()
            })
        );
        let object: AppInfo = serde_json::from_value(serde_json::json!({
            "id": "01234567-89ab-cdef-0123-456789abcdef", "name": "example",
            "generation": {"id": "01234567-89ab-cdef-0123-456789abcdef", "name": "cedar"}
        }))
        .unwrap();
        assert_eq!(object.generation(), Ok(Generation::Cedar));
        let odd: AppInfo = serde_json::from_value(serde_json::json!({
            "id": "x", "name": "example", "generation": "birch"
        }))
        .unwrap();
        assert!(odd.generation().unwrap_err().to_string().contains("birch"));
        let e = v3.generation().unwrap_err();
        assert_eq!(e.reason(), "GenerationUnknown");
        assert!(e.is_transient());
        assert!(e.to_string().contains("app example"), "{e}");
    }
}
