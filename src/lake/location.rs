//! Locations → object stores: plain paths and `file://`, `s3://`, `az://` / `azure://` / `adl://`,
//! `abfs[s]://container@account.dfs.core.windows.net/…`, `https://account.blob.core.windows.net/container/…`
//! and `gs://`. Credentials come from where each cloud's tools look (environment variables as
//! `object_store` reads them — `AWS_*`, `AZURE_*`, `GOOGLE_*` — instance metadata, managed or
//! workload identity), never from the command line.

use super::LakeError;
use object_store::path::Path as StorePath;
use object_store::ObjectStore;
use std::sync::Arc;

/// A location in an object store: the store at its bucket or container root, the URL DataFusion
/// knows that root by (`scheme://bucket`), and the prefix inside it.
#[derive(Debug, Clone)]
pub struct Remote {
    pub root: Arc<dyn ObjectStore>,
    pub base: url::Url,
    pub prefix: StorePath,
}

impl Remote {
    /// The location's URL with a trailing `/` (`s3://bucket/prefix/`).
    pub fn url(&self) -> String {
        let p = self.prefix.as_ref();
        if p.is_empty() {
            format!("{}/", self.base.as_str().trim_end_matches('/'))
        } else {
            format!("{}/{p}/", self.base.as_str().trim_end_matches('/'))
        }
    }
}

/// True for locations that are URLs of an object store (not a local path or `file://`).
pub fn is_remote(location: &str) -> bool {
    location.contains("://") && !location.starts_with("file://")
}

fn what_to_set(scheme: &str) -> &'static str {
    match scheme {
        "s3" => "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE / an instance role), AWS_REGION, and AWS_ENDPOINT for an S3-compatible store",
        "gs" => "set GOOGLE_APPLICATION_CREDENTIALS (or GOOGLE_SERVICE_ACCOUNT) or run where a service account is attached",
        _ => "set AZURE_STORAGE_ACCOUNT_NAME and one of AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN, AZURE_CLIENT_ID+AZURE_CLIENT_SECRET+AZURE_TENANT_ID, or run with a managed / workload identity (AZURE_STORAGE_USE_EMULATOR=true for Azurite)",
    }
}

/// The credential hint for a location (what to set when access fails).
pub fn credential_hint(location: &str) -> &'static str {
    let scheme = location.split("://").next().unwrap_or_default();
    let scheme = match scheme {
        "s3" | "s3a" => "s3",
        "gs" => "gs",
        _ => "az",
    };
    what_to_set(scheme)
}

fn unsupported(location: &str, why: &str) -> LakeError {
    LakeError::Unsupported(format!("{location} ({why})"))
}

/// Parses an object-store URL into its store (built with credentials from the environment).
pub fn remote(location: &str) -> Result<Remote, LakeError> {
    use object_store::aws::AmazonS3Builder;
    use object_store::azure::MicrosoftAzureBuilder;
    use object_store::gcp::GoogleCloudStorageBuilder;
    let u = url::Url::parse(location).map_err(|e| unsupported(location, &e.to_string()))?;
    let host = u.host_str().unwrap_or_default().to_string();
    let path = u.path().trim_matches('/').to_string();
    let built = |scheme: &str, r: object_store::Result<Arc<dyn ObjectStore>>| {
        r.map_err(|e| LakeError::Credentials {
            url: location.to_string(),
            msg: e.to_string(),
            hint: what_to_set(scheme),
        })
    };
    let (root, base, prefix): (Arc<dyn ObjectStore>, String, String) = match u.scheme() {
        "s3" | "s3a" => {
            let s = AmazonS3Builder::from_env().with_bucket_name(&host).build().map(|s| Arc::new(s) as _);
            (built("s3", s)?, format!("s3://{host}"), path)
        }
        "gs" => {
            let s = GoogleCloudStorageBuilder::from_env().with_bucket_name(&host).build().map(|s| Arc::new(s) as _);
            (built("gs", s)?, format!("gs://{host}"), path)
        }
        "az" | "azure" | "adl" => {
            let s = MicrosoftAzureBuilder::from_env().with_container_name(&host).build().map(|s| Arc::new(s) as _);
            (built("az", s)?, format!("az://{host}"), path)
        }
        "abfs" | "abfss" => {
            // container@account.dfs.core.windows.net, or (fsspec) the container alone.
            let (container, account) = match u.username() {
                "" => (host.clone(), None),
                c => (c.to_string(), host.split('.').next().map(str::to_string)),
            };
            let mut b = MicrosoftAzureBuilder::from_env().with_container_name(&container);
            if let Some(a) = account {
                b = b.with_account(a);
            }
            (built("az", b.build().map(|s| Arc::new(s) as _))?, format!("az://{container}"), path)
        }
        "https" | "http" if host.ends_with(".blob.core.windows.net") || host.ends_with(".dfs.core.windows.net") => {
            let account = host.split('.').next().unwrap_or_default().to_string();
            let (container, rest) = path.split_once('/').unwrap_or((path.as_str(), ""));
            if container.is_empty() {
                return Err(unsupported(location, "name the container: https://ACCOUNT.blob.core.windows.net/CONTAINER/prefix"));
            }
            let b = MicrosoftAzureBuilder::from_env().with_account(account).with_container_name(container);
            (built("az", b.build().map(|s| Arc::new(s) as _))?, format!("az://{container}"), rest.to_string())
        }
        s => {
            return Err(unsupported(
                location,
                &format!("scheme '{s}': give a folder, file://, s3://, az://, abfss://, https://ACCOUNT.blob.core.windows.net/ or gs://"),
            ))
        }
    };
    let base = url::Url::parse(&base).map_err(|e| unsupported(location, &e.to_string()))?;
    let root: Arc<dyn ObjectStore> = Arc::new(super::metered::Metered(root));
    Ok(Remote { root, base, prefix: StorePath::from(prefix) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        std::env::set_var("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1");
        std::env::set_var("AZURE_STORAGE_USE_EMULATOR", "true");
        let r = remote("s3://bucket/a/lake").unwrap();
        assert_eq!(
            (r.base.as_str(), r.prefix.as_ref(), r.url()),
            ("s3://bucket", "a/lake", "s3://bucket/a/lake/".into())
        );
        let r = remote("az://lake/").unwrap();
        assert_eq!((r.base.as_str(), r.prefix.as_ref(), r.url()), ("az://lake", "", "az://lake/".into()));
        let r = remote("abfss://logs@acct.dfs.core.windows.net/tenant/x").unwrap();
        assert_eq!((r.base.as_str(), r.prefix.as_ref()), ("az://logs", "tenant/x"));
        let r = remote("https://acct.blob.core.windows.net/insights-logs-signinlogs/tenantId=1").unwrap();
        assert_eq!((r.base.as_str(), r.prefix.as_ref()), ("az://insights-logs-signinlogs", "tenantId=1"));
        assert!(matches!(remote("ftp://x/y"), Err(LakeError::Unsupported(_))));
        assert!(is_remote("s3://b") && !is_remote("/tmp/x") && !is_remote("file:///tmp/x"));
    }
}
