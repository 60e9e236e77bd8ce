//! Enrichment with the MaxMind test databases (known answers), an asset
//! table and an indicator list reloaded while running.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use firstmile_config::{DropRule, Enrich, SourceEnrich};
use firstmile_enrich::{Enricher, SourceRules};
use firstmile_event::{Event, Origin};

fn geoip(file: &str) -> Option<PathBuf> {
    Some(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data/geoip")
            .join(file),
    )
}

fn event(source_ip: &str, destination_ip: Option<&str>) -> Event {
    let origin = Origin {
        source: "fw".into(),
        topic: "raw.fw".into(),
        partition: 0,
        offset: 1,
    };
    let mut e = Event::new(origin, "2026-11-23T12:00:00Z".parse().unwrap(), "test");
    e.source.ip = Some(source_ip.parse().unwrap());
    e.destination.ip = destination_ip.map(|d| d.parse().unwrap());
    e
}

#[test]
fn geoip_city_and_asn_give_the_known_answers() {
    let enricher = Enricher::new(&Enrich {
        geoip_city: geoip("GeoLite2-City-Test.mmdb"),
        geoip_asn: geoip("GeoLite2-ASN-Test.mmdb"),
        ..Default::default()
    })
    .unwrap();
    let mut e = event("81.2.69.142", Some("216.160.83.56"));
    enricher.enrich(&mut e);
    let geo = e.source.geo.as_ref().unwrap();
    assert_eq!(geo.city_name.as_deref(), Some("London"));
    assert_eq!(geo.country_iso_code.as_deref(), Some("GB"));
    let at = geo.location.unwrap();
    assert!(
        (at.lat - 51.5142).abs() < 0.01 && (at.lon + 0.0931).abs() < 0.01,
        "{at:?}"
    );
    let dst = e.destination.geo.as_ref().unwrap();
    assert_eq!(
        (dst.city_name.as_deref(), dst.country_iso_code.as_deref()),
        (Some("Milton"), Some("US"))
    );

    let mut e = event("1.128.0.1", None);
    enricher.enrich(&mut e);
    let asn = e.source.autonomous_system.as_ref().unwrap();
    assert_eq!(asn.number, 1221);
    assert_eq!(asn.organization_name.as_deref(), Some("Telstra Pty Ltd"));

    // Addresses the databases do not know get nothing, not an error.
    let mut e = event("10.0.0.1", None);
    enricher.enrich(&mut e);
    assert_eq!((e.source.geo, e.source.autonomous_system), (None, None));
}

#[test]
fn the_asset_table_uses_the_longest_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets.csv");
    std::fs::write(&assets, "cidr,owner,zone\n10.0.0.0/8,infra,internal\n10.20.0.0/16,payments,pci\n2001:db8::/32,lab,v6\n").unwrap();
    let enricher = Enricher::new(&Enrich {
        assets: Some(assets.clone()),
        ..Default::default()
    })
    .unwrap();
    let owner = |ip: &str| {
        let mut e = event(ip, None);
        enricher.enrich(&mut e);
        e.source.asset.map(|a| (a.owner, a.zone))
    };
    assert_eq!(owner("10.20.3.4"), Some(("payments".into(), "pci".into())));
    assert_eq!(owner("10.9.3.4"), Some(("infra".into(), "internal".into())));
    assert_eq!(owner("2001:db8::1"), Some(("lab".into(), "v6".into())));
    assert_eq!(owner("192.0.2.1"), None);

    std::fs::write(&assets, "10.0.0.0/40,x,y\n").unwrap();
    let err = Enricher::new(&Enrich {
        assets: Some(assets),
        ..Default::default()
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn indicators_mark_events_and_reload_when_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("indicators.txt");
    std::fs::write(&list, "# bad actors\n203.0.113.66\nEvil.Example.\n").unwrap();
    let mut enricher = Enricher::new(&Enrich {
        indicators: Some(list.clone()),
        ..Default::default()
    })
    .unwrap();

    let mut e = event("198.51.100.1", Some("203.0.113.66"));
    enricher.enrich(&mut e);
    let hit = e.threat.as_ref().unwrap();
    assert_eq!(
        (hit.indicator.kind.as_str(), hit.indicator.matched.as_str()),
        ("ipv4-addr", "203.0.113.66")
    );
    assert_eq!(hit.indicator.matched_field, "destination.ip");

    let mut e = event("198.51.100.1", None);
    e.url.original = Some("https://evil.example:8443/login?x=1".into());
    enricher.enrich(&mut e);
    assert_eq!(e.threat.as_ref().unwrap().indicator.matched, "evil.example");

    // Unchanged file: no reload.
    assert!(!enricher.refresh().unwrap());
    // The list changes while running: the new indicator matches, the old does not.
    std::fs::write(&list, "198.51.100.1\n").unwrap();
    let later = SystemTime::now() + Duration::from_secs(2);
    std::fs::File::options()
        .write(true)
        .open(&list)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert!(enricher.refresh().unwrap());
    let mut e = event("198.51.100.1", Some("203.0.113.66"));
    enricher.enrich(&mut e);
    assert_eq!(e.threat.unwrap().indicator.matched_field, "source.ip");
}

#[test]
fn labels_and_drop_rules() {
    let rules = SourceRules::new(&SourceEnrich {
        labels: [("team".to_string(), "sre".to_string())].into(),
        drop: vec![DropRule {
            name: "debug".into(),
            field: "log.level".into(),
            pattern: "(?i)^debug$".into(),
        }],
    })
    .unwrap();
    let mut e = event("192.0.2.1", None);
    e.log.level = Some("DEBUG".into());
    assert_eq!(rules.drop_rule(&e), Some("debug"));
    e.log.level = Some("INFO".into());
    assert_eq!(rules.drop_rule(&e), None);
    rules.label(&mut e);
    assert_eq!(e.labels.get("team").map(String::as_str), Some("sre"));
    let bad = SourceEnrich {
        drop: vec![DropRule {
            name: "x".into(),
            field: "f".into(),
            pattern: "(".into(),
        }],
        ..Default::default()
    };
    assert!(SourceRules::new(&bad).is_err());
}
