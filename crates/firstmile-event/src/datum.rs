//! The event's Avro datum (binary encoding of [`EVENT_SCHEMA`]) written from
//! and read into an [`Event`] directly, field by field in the schema's order.
//!
//! Why not through `apache_avro::types::Value`: building that tree costs an
//! allocation per field and name, and `apache_avro`'s schema-driven writer and
//! reader look fields up by name per record. Both were the largest items in
//! the stages' and sinks' profiles (BENCHMARKS.md). Tests check the bytes
//! equal `apache_avro`'s and that reading agrees with decoding by
//! `apache_avro` followed by [`Event::from_avro`], on good and damaged data.
//!
//! Only for data written with exactly [`EVENT_SCHEMA`]: a datum of another
//! schema version goes through `apache_avro`'s schema resolution and
//! [`Event::from_avro`].
//!
//! [`EVENT_SCHEMA`]: crate::EVENT_SCHEMA

use std::collections::BTreeMap;

use crate::{
    Asset, AutonomousSystem, Endpoint, Event, EventInfo, FromAvroError, Geo, GeoPoint, Host, Http,
    Log, Origin, Process, Threat, ThreatIndicator, Url, User, UserAgent,
};

impl Event {
    /// The event's Avro datum.
    pub fn to_avro_datum(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_avro_datum(&mut out);
        out
    }

    /// Appends the event's Avro datum to `out` (after a frame header, say).
    pub fn write_avro_datum(&self, out: &mut Vec<u8>) {
        // Most events fit in this at once: one allocation, no regrowing.
        out.reserve(256 + self.message.as_ref().map_or(0, String::len));
        let w = &mut Writer(out);
        let mut uuid = [0u8; uuid::fmt::Hyphenated::LENGTH];
        w.str(self.event_id.hyphenated().encode_lower(&mut uuid));
        w.long(self.timestamp.as_microsecond());
        w.long(self.received_at.as_microsecond());
        w.str(&self.pipeline_version);
        let o = &self.origin;
        w.str(&o.source);
        w.str(&o.topic);
        w.long(i64::from(o.partition));
        w.long(o.offset);
        let e = &self.event;
        w.opt_str(&e.dataset);
        w.opt_str(&e.action);
        w.opt_str(&e.outcome);
        w.opt_str(&e.code);
        w.opt_long(e.severity);
        w.opt_str(&self.log.level);
        w.opt_str(&self.log.logger);
        w.opt_str(&self.host.name);
        w.opt_str(&self.process.name);
        w.opt_long(self.process.pid);
        w.opt_str(&self.user.name);
        w.endpoint(&self.source);
        w.endpoint(&self.destination);
        w.opt_str(&self.http.request_method);
        w.opt_long(self.http.response_status_code.map(i64::from));
        w.opt_str(&self.url.original);
        w.opt_str(&self.user_agent.original);
        w.opt_str(&self.message);
        w.optional(self.threat.as_ref(), |w, t| {
            w.str(&t.indicator.kind);
            w.str(&t.indicator.matched);
            w.str(&t.indicator.matched_field);
        });
        w.map(&self.labels);
        w.map(&self.fields);
        w.long(i64::try_from(self.raw_bytes).unwrap_or(i64::MAX));
    }

    /// The event in an Avro datum written with exactly [`crate::EVENT_SCHEMA`].
    pub fn from_avro_datum(datum: &[u8]) -> Result<Event, FromAvroError> {
        let r = &mut Reader(datum);
        let event_id = r.string("event_id")?;
        let event_id = event_id
            .parse()
            .map_err(|_| FromAvroError(format!("`event_id` {event_id:?} is not a UUID")))?;
        let timestamp = r.timestamp("timestamp")?;
        let received_at = r.timestamp("received_at")?;
        let pipeline_version = r.string("pipeline_version")?;
        let origin = Origin {
            source: r.string("source")?,
            topic: r.string("topic")?,
            partition: r.int("partition")?,
            offset: r.long("offset")?,
        };
        let event = EventInfo {
            dataset: r.opt_string("dataset")?,
            action: r.opt_string("action")?,
            outcome: r.opt_string("outcome")?,
            code: r.opt_string("code")?,
            severity: r.opt_long("severity")?,
        };
        let log = Log {
            level: r.opt_string("level")?,
            logger: r.opt_string("logger")?,
        };
        let host = Host {
            name: r.opt_string("name")?,
        };
        let process = Process {
            name: r.opt_string("name")?,
            pid: r.opt_long("pid")?,
        };
        let user = User {
            name: r.opt_string("name")?,
        };
        let source = r.endpoint()?;
        let destination = r.endpoint()?;
        let http = Http {
            request_method: r.opt_string("request_method")?,
            response_status_code: r.opt_u16("response_status_code")?,
        };
        let url = Url {
            original: r.opt_string("original")?,
        };
        let user_agent = UserAgent {
            original: r.opt_string("original")?,
        };
        let message = r.opt_string("message")?;
        let threat = r.optional("threat", |r| {
            Ok(Threat {
                indicator: ThreatIndicator {
                    kind: r.string("type")?,
                    matched: r.string("matched")?,
                    matched_field: r.string("matched_field")?,
                },
            })
        })?;
        let labels = r.map("labels")?;
        let fields = r.map("fields")?;
        let raw_bytes = u64::try_from(r.long("raw_bytes")?).unwrap_or(0);
        Ok(Event {
            event_id,
            timestamp,
            received_at,
            pipeline_version,
            origin,
            event,
            log,
            host,
            process,
            user,
            source,
            destination,
            http,
            url,
            user_agent,
            message,
            threat,
            labels,
            fields,
            raw_bytes,
        })
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    /// Zig-zag, then variable-length (`int` and `long` alike).
    fn long(&mut self, n: i64) {
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        while z >= 0x80 {
            self.0.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
        self.0.push(z as u8);
    }

    fn str(&mut self, s: &str) {
        self.long(s.len() as i64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn double(&mut self, x: f64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }

    /// A `["null", T]` union; `write` writes the `T` when there is one.
    fn optional<T>(&mut self, v: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match v {
            Some(x) => {
                self.long(1);
                write(self, x);
            }
            None => self.long(0),
        }
    }

    fn opt_str(&mut self, v: &Option<String>) {
        self.optional(v.as_deref(), Self::str);
    }

    fn opt_long(&mut self, v: Option<i64>) {
        self.optional(v, Self::long);
    }

    /// One block of every entry (already sorted by key: the same event
    /// always encodes to the same bytes), then the empty block.
    fn map(&mut self, m: &BTreeMap<String, String>) {
        if !m.is_empty() {
            self.long(m.len() as i64);
            for (k, v) in m {
                self.str(k);
                self.str(v);
            }
        }
        self.long(0);
    }

    fn endpoint(&mut self, e: &Endpoint) {
        self.optional(e.ip, |w, ip| w.str(&ip.to_string()));
        self.opt_long(e.port.map(i64::from));
        self.optional(e.geo.as_ref(), |w, g| {
            w.opt_str(&g.city_name);
            w.opt_str(&g.country_iso_code);
            w.optional(g.location, |w, l| {
                w.double(l.lat);
                w.double(l.lon);
            });
        });
        self.optional(e.autonomous_system.as_ref(), |w, a| {
            w.long(i64::from(a.number));
            w.opt_str(&a.organization_name);
        });
        self.optional(e.asset.as_ref(), |w, a| {
            w.str(&a.owner);
            w.str(&a.zone);
        });
    }
}

/// A cursor over a datum; every read checks what is left.
struct Reader<'a>(&'a [u8]);

fn err(name: &str, what: &str) -> FromAvroError {
    FromAvroError(format!("`{name}`: {what}"))
}

impl Reader<'_> {
    fn long(&mut self, name: &str) -> Result<i64, FromAvroError> {
        let mut z: u64 = 0;
        for i in 0..10 {
            let Some((&b, rest)) = self.0.split_first() else {
                return Err(err(name, "the datum ends inside a number"));
            };
            self.0 = rest;
            z |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err(err(name, "a number longer than 10 bytes"))
    }

    fn int(&mut self, name: &str) -> Result<i32, FromAvroError> {
        let n = self.long(name)?;
        i32::try_from(n).map_err(|_| err(name, &format!("{n} is not an int")))
    }

    fn bytes(&mut self, name: &str) -> Result<&[u8], FromAvroError> {
        let len = self.long(name)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= self.0.len())
            .ok_or_else(|| {
                err(
                    name,
                    &format!("length {len} with {} bytes left", self.0.len()),
                )
            })?;
        let (b, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(b)
    }

    fn string(&mut self, name: &str) -> Result<String, FromAvroError> {
        let b = self.bytes(name)?;
        String::from_utf8(b.to_vec()).map_err(|_| err(name, "not UTF-8"))
    }

    fn double(&mut self, name: &str) -> Result<f64, FromAvroError> {
        let Some((b, rest)) = self.0.split_first_chunk::<8>() else {
            return Err(err(name, "the datum ends inside a double"));
        };
        self.0 = rest;
        Ok(f64::from_le_bytes(*b))
    }

    fn timestamp(&mut self, name: &str) -> Result<jiff::Timestamp, FromAvroError> {
        let micros = self.long(name)?;
        jiff::Timestamp::from_microsecond(micros).map_err(|e| err(name, &e.to_string()))
    }

    /// Whether a `["null", T]` union holds a `T` (which follows).
    fn present(&mut self, name: &str) -> Result<bool, FromAvroError> {
        match self.long(name)? {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(err(name, &format!("union branch {n} of 2"))),
        }
    }

    /// A `["null", T]` union; `read` reads the `T` when there is one.
    fn optional<T>(
        &mut self,
        name: &str,
        read: impl FnOnce(&mut Self) -> Result<T, FromAvroError>,
    ) -> Result<Option<T>, FromAvroError> {
        if self.present(name)? {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }

    fn opt_string(&mut self, name: &str) -> Result<Option<String>, FromAvroError> {
        self.optional(name, |r| r.string(name))
    }

    fn opt_long(&mut self, name: &str) -> Result<Option<i64>, FromAvroError> {
        self.optional(name, |r| r.long(name))
    }

    fn opt_u16(&mut self, name: &str) -> Result<Option<u16>, FromAvroError> {
        self.optional(name, |r| {
            let n = r.int(name)?;
            u16::try_from(n).map_err(|_| FromAvroError(format!("`{name}` {n} out of range")))
        })
    }

    /// Blocks of entries up to an empty block; a negative count is followed
    /// by the block's size in bytes (the spec's form for skipping).
    fn map(&mut self, name: &str) -> Result<BTreeMap<String, String>, FromAvroError> {
        let mut m = BTreeMap::new();
        loop {
            let count = match self.long(name)? {
                0 => return Ok(m),
                n if n < 0 => {
                    self.long(name)?;
                    n.unsigned_abs()
                }
                n => n.unsigned_abs(),
            };
            // Each entry takes at least two bytes: a count beyond that is
            // damage, not a reason to loop for long.
            if count > self.0.len() as u64 {
                return Err(err(
                    name,
                    &format!("{count} entries in {} bytes", self.0.len()),
                ));
            }
            for _ in 0..count {
                let k = self.string(name)?;
                let v = self.string(name)?;
                m.insert(k, v);
            }
        }
    }

    fn endpoint(&mut self) -> Result<Endpoint, FromAvroError> {
        let ip = self
            .opt_string("ip")?
            .map(|s| {
                s.parse()
                    .map_err(|_| FromAvroError(format!("`ip` {s:?} is not an IP address")))
            })
            .transpose()?;
        let port = self.opt_u16("port")?;
        let geo = self.optional("geo", |r| {
            Ok(Geo {
                city_name: r.opt_string("city_name")?,
                country_iso_code: r.opt_string("country_iso_code")?,
                location: r.optional("location", |r| {
                    Ok(GeoPoint {
                        lat: r.double("lat")?,
                        lon: r.double("lon")?,
                    })
                })?,
            })
        })?;
        let autonomous_system = self.optional("as", |r| {
            let number = r.long("number")?;
            Ok(AutonomousSystem {
                number: u32::try_from(number)
                    .map_err(|_| FromAvroError(format!("AS number {number} out of range")))?,
                organization_name: r.opt_string("organization_name")?,
            })
        })?;
        let asset = self.optional("asset", |r| {
            Ok(Asset {
                owner: r.string("owner")?,
                zone: r.string("zone")?,
            })
        })?;
        Ok(Endpoint {
            ip,
            port,
            geo,
            autonomous_system,
            asset,
        })
    }
}
