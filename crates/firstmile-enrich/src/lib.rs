//! Enrichment of normalized events, in the `enrich` stage:
//! - GeoIP city and ASN for `source.ip` and `destination.ip` (MaxMind DB files);
//! - the asset (owner, zone) an address belongs to, from a CIDR table;
//! - threat indicators (IPs, domains) marking `threat.indicator`, from a list
//!   that [`Enricher::refresh`] reloads when the file changes;
//! - per source: static labels, and drop rules counted per rule.
//!
//! Reads its files; no other I/O.

mod cidr;

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use firstmile_event::{
    Asset, AutonomousSystem, Endpoint, Event, Geo, GeoPoint, Threat, ThreatIndicator,
};
use maxminddb::{geoip2, Reader};
use regex::Regex;

use cidr::Cidr;

#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("drop rule `{name}`: invalid pattern: {source}")]
    Pattern { name: String, source: regex::Error },
}

fn file_error(path: &Path, message: impl ToString) -> EnrichError {
    EnrichError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The indicator list and the file it came from.
struct Indicators {
    path: PathBuf,
    modified: Option<SystemTime>,
    ips: HashSet<IpAddr>,
    domains: HashSet<String>,
}

impl Indicators {
    fn load(path: &Path) -> Result<Indicators, EnrichError> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
        let (mut ips, mut domains) = (HashSet::new(), HashSet::new());
        for line in text.lines() {
            let item = line.split('#').next().unwrap_or("").trim();
            if item.is_empty() {
                continue;
            }
            match item.parse::<IpAddr>() {
                Ok(ip) => {
                    ips.insert(ip);
                }
                Err(_) => {
                    domains.insert(item.trim_end_matches('.').to_ascii_lowercase());
                }
            }
        }
        Ok(Indicators {
            path: path.to_path_buf(),
            modified,
            ips,
            domains,
        })
    }
}

/// The shared enrichment data of a stage worker.
pub struct Enricher {
    city: Option<Reader<Vec<u8>>>,
    asn: Option<Reader<Vec<u8>>>,
    /// Longest prefix first.
    assets: Vec<(Cidr, Asset)>,
    indicators: Option<Indicators>,
}

impl Enricher {
    pub fn new(config: &firstmile_config::Enrich) -> Result<Enricher, EnrichError> {
        let open = |p: &PathBuf| Reader::open_readfile(p).map_err(|e| file_error(p, e));
        let mut assets = match &config.assets {
            Some(path) => load_assets(path)?,
            None => Vec::new(),
        };
        assets.sort_by_key(|(cidr, _)| std::cmp::Reverse(cidr.prefix_len()));
        Ok(Enricher {
            city: config.geoip_city.as_ref().map(open).transpose()?,
            asn: config.geoip_asn.as_ref().map(open).transpose()?,
            assets,
            indicators: config
                .indicators
                .as_deref()
                .map(Indicators::load)
                .transpose()?,
        })
    }

    /// Reloads the indicator list if its file changed; true if it did. A file
    /// that cannot be read keeps the list loaded before (and the error is
    /// returned so it can be logged and counted).
    pub fn refresh(&mut self) -> Result<bool, EnrichError> {
        let Some(current) = &self.indicators else {
            return Ok(false);
        };
        let modified = std::fs::metadata(&current.path)
            .and_then(|m| m.modified())
            .map_err(|e| file_error(&current.path, e))?;
        if Some(modified) == current.modified {
            return Ok(false);
        }
        self.indicators = Some(Indicators::load(&current.path.clone())?);
        Ok(true)
    }

    /// Adds geo, AS, asset and threat data to the event.
    pub fn enrich(&self, event: &mut Event) {
        self.endpoint(&mut event.source);
        self.endpoint(&mut event.destination);
        event.threat = self.threat(event);
    }

    fn endpoint(&self, endpoint: &mut Endpoint) {
        let Some(ip) = endpoint.ip else { return };
        if let Some(reader) = &self.city {
            if let Ok(Some(city)) = reader.lookup(ip).and_then(|r| r.decode::<geoip2::City>()) {
                let geo = Geo {
                    city_name: city.city.names.english.map(str::to_string),
                    country_iso_code: city.country.iso_code.map(str::to_string),
                    location: match (city.location.latitude, city.location.longitude) {
                        (Some(lat), Some(lon)) => Some(GeoPoint { lat, lon }),
                        _ => None,
                    },
                };
                if geo != Geo::default() {
                    endpoint.geo = Some(geo);
                }
            }
        }
        if let Some(reader) = &self.asn {
            if let Ok(Some(asn)) = reader.lookup(ip).and_then(|r| r.decode::<geoip2::Asn>()) {
                if let Some(number) = asn.autonomous_system_number {
                    endpoint.autonomous_system = Some(AutonomousSystem {
                        number,
                        organization_name: asn.autonomous_system_organization.map(str::to_string),
                    });
                }
            }
        }
        endpoint.asset = self
            .assets
            .iter()
            .find(|(cidr, _)| cidr.contains(ip))
            .map(|(_, asset)| asset.clone());
    }

    fn threat(&self, event: &Event) -> Option<Threat> {
        let list = self.indicators.as_ref()?;
        for (field, ip) in [
            ("source.ip", event.source.ip),
            ("destination.ip", event.destination.ip),
        ] {
            if let Some(ip) = ip.filter(|ip| list.ips.contains(ip)) {
                let kind = if ip.is_ipv4() {
                    "ipv4-addr"
                } else {
                    "ipv6-addr"
                };
                return Some(indicator(kind, ip.to_string(), field));
            }
        }
        let url_host = event.url.original.as_deref().and_then(url_host);
        let domains = [
            ("url.original", url_host),
            (
                "destination.domain",
                event.fields.get("destination.domain").cloned(),
            ),
            (
                "dns.question.name",
                event.fields.get("dns.question.name").cloned(),
            ),
        ];
        for (field, domain) in domains {
            let Some(domain) = domain else { continue };
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            if list.domains.contains(&domain) {
                return Some(indicator("domain-name", domain, field));
            }
        }
        None
    }
}

fn indicator(kind: &str, matched: String, field: &str) -> Threat {
    Threat {
        indicator: ThreatIndicator {
            kind: kind.to_string(),
            matched,
            matched_field: field.to_string(),
        },
    }
}

/// The host of `scheme://host[:port]/…`.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    (!host.is_empty()).then(|| host.to_string())
}

fn load_assets(path: &Path) -> Result<Vec<(Cidr, Asset)>, EnrichError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
    let mut assets = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (n == 0 && line.starts_with("cidr")) {
            continue;
        }
        let mut cols = line.split(',').map(str::trim);
        let (Some(cidr), Some(owner), Some(zone)) = (cols.next(), cols.next(), cols.next()) else {
            return Err(file_error(
                path,
                format!("line {}: expected cidr,owner,zone", n + 1),
            ));
        };
        let cidr: Cidr = cidr
            .parse()
            .map_err(|e| file_error(path, format!("line {}: {e}", n + 1)))?;
        assets.push((
            cidr,
            Asset {
                owner: owner.to_string(),
                zone: zone.to_string(),
            },
        ));
    }
    Ok(assets)
}

/// A source's labels and drop rules.
pub struct SourceRules {
    labels: Vec<(String, String)>,
    drop: Vec<(String, String, Regex)>,
}

impl SourceRules {
    pub fn new(config: &firstmile_config::SourceEnrich) -> Result<SourceRules, EnrichError> {
        let drop = config
            .drop
            .iter()
            .map(|r| {
                Regex::new(&r.pattern)
                    .map(|re| (r.name.clone(), r.field.clone(), re))
                    .map_err(|source| EnrichError::Pattern {
                        name: r.name.clone(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(SourceRules {
            labels: config.labels.clone().into_iter().collect(),
            drop,
        })
    }

    /// The names of the drop rules, in order.
    pub fn drop_rules(&self) -> impl Iterator<Item = &str> {
        self.drop.iter().map(|(name, _, _)| name.as_str())
    }

    /// The name of the first drop rule the event matches, if any.
    pub fn drop_rule(&self, event: &Event) -> Option<&str> {
        self.drop
            .iter()
            .find(|(_, field, re)| event.get(field).is_some_and(|v| re.is_match(&v)))
            .map(|(name, _, _)| name.as_str())
    }

    pub fn label(&self, event: &mut Event) {
        for (k, v) in &self.labels {
            event.labels.insert(k.clone(), v.clone());
        }
    }
}
