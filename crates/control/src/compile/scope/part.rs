//! One encoded collection of a scope's outbound part ([`Part`]): the JSON array that
//! [`paymesh_api::ProxyConfig::encode`] writes for it, and where each item (and each route
//! config's virtual host) sits in it, so a delta is planned by name over the encoded items and
//! spliced from their bytes, without decoding or keeping the typed items.
//!
//! Two items are equal when their encodings are: serde_json writes a value deterministically
//! and decodes it back to the same value, so equal bytes mean equal items and back.

use std::collections::HashMap;
use std::ops::Range;

use paymesh_api::delta::{Named, Plan, plan};
use paymesh_api::model::{RouteConfig, VirtualHost};
use serde::Serialize;

use super::SpliceError;

/// Items by name and their spans in a JSON buffer.
type Spans = Vec<(Box<str>, Range<usize>)>;

/// A collection as the JSON array `ProxyConfig::encode` writes, and where each item is in it.
#[derive(Debug)]
pub struct Part {
    /// `[a,b,...]`.
    pub json: Vec<u8>,
    items: Spans,
    /// Route configs only: each one's virtual hosts.
    hosts: Vec<Spans>,
}

impl Part {
    /// `items` written as serde_json writes a `Vec`: `[a,b,...]`.
    pub fn encode<T: Serialize + Named>(items: &[T]) -> Result<Self, serde_json::Error> {
        let mut json = vec![b'['];
        let mut spans = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            let start = json.len();
            serde_json::to_writer(&mut json, item)?;
            spans.push((item.name().into(), start..json.len()));
        }
        json.push(b']');
        Ok(Part { json, items: spans, hosts: Vec::new() })
    }

    /// Route configs written as serde_json writes them (`{"name":..,"virtualHosts":[..]}`),
    /// keeping where each virtual host is too.
    pub fn encode_routes(routes: &[RouteConfig]) -> Result<Self, serde_json::Error> {
        let mut json = vec![b'['];
        let mut items = Vec::with_capacity(routes.len());
        let mut hosts = Vec::with_capacity(routes.len());
        for (i, route) in routes.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            let start = json.len();
            json.extend_from_slice(b"{\"name\":");
            serde_json::to_writer(&mut json, &route.name)?;
            json.extend_from_slice(b",\"virtualHosts\":[");
            let mut spans = Vec::with_capacity(route.virtual_hosts.len());
            for (k, host) in route.virtual_hosts.iter().enumerate() {
                if k > 0 {
                    json.push(b',');
                }
                let at = json.len();
                serde_json::to_writer(&mut json, host)?;
                spans.push((host.name.as_str().into(), at..json.len()));
            }
            json.extend_from_slice(b"]}");
            items.push((route.name.as_str().into(), start..json.len()));
            hosts.push(spans);
        }
        json.push(b']');
        Ok(Part { json, items, hosts })
    }

    /// (name, encoded item) pairs of `spans`, in order.
    fn named<'a>(&'a self, spans: &'a [(Box<str>, Range<usize>)]) -> Vec<(&'a str, &'a [u8])> {
        spans
            .iter()
            .map(|(name, range)| (&**name, self.json.get(range.clone()).unwrap_or_default()))
            .collect()
    }

    /// The `CollectionDelta` from `base` to `self`, as JSON; `None` when nothing changed.
    pub fn delta_from<T: Named>(&self, base: &Part) -> Result<Option<Vec<u8>>, SpliceError> {
        let (old, new) = (base.named(&base.items), self.named(&self.items));
        let plan = plan(T::KIND, &old, &new)?;
        if plan.is_empty() {
            return Ok(None);
        }
        let mut json = Vec::new();
        write_collection_delta(&mut json, &plan, &old, &new)?;
        Ok(Some(json))
    }

    /// The route configs' change from `base` to `self`: the `CollectionDelta` of new and
    /// moved route configs (and of those whose virtual host names repeat), and the
    /// `RouteVirtualHosts` of the others that changed, as JSON; `None` for each when empty.
    pub fn routes_delta_from(&self, base: &Part) -> Result<RoutesDelta, SpliceError> {
        let (old, new) = (base.named(&base.items), self.named(&self.items));
        let old_names: Vec<(&str, ())> = old.iter().map(|(name, _)| (*name, ())).collect();
        let new_names: Vec<(&str, ())> = new.iter().map(|(name, _)| (*name, ())).collect();
        let kept = plan(RouteConfig::KIND, &old_names, &new_names)?;
        let old_at: HashMap<&str, usize> = old.iter().enumerate().map(|(j, (name, _))| (*name, j)).collect();
        let mut upsert = kept.upsert.clone();
        let mut patches = Vec::new();
        let mut placed = kept.upsert.iter().peekable();
        for (i, (name, bytes)) in new.iter().enumerate() {
            if placed.next_if_eq(&&i).is_some() {
                continue;
            }
            let Some(&j) = old_at.get(name).filter(|&&j| old[j].1 != *bytes) else { continue };
            let (old_hosts, new_hosts) = (
                base.named(base.hosts.get(j).map_or(&[][..], Vec::as_slice)),
                self.named(self.hosts.get(i).map_or(&[][..], Vec::as_slice)),
            );
            match plan(VirtualHost::KIND, &old_hosts, &new_hosts) {
                Ok(hosts) if !hosts.is_empty() => {
                    patches.push(if patches.is_empty() { b'[' } else { b',' });
                    patches.extend_from_slice(b"{\"route\":");
                    serde_json::to_writer(&mut patches, name)?;
                    patches.extend_from_slice(b",\"virtualHosts\":");
                    write_collection_delta(&mut patches, &hosts, &old_hosts, &new_hosts)?;
                    patches.push(b'}');
                }
                _ => upsert.push(i),
            }
        }
        upsert.sort_unstable();
        let routes = Plan { upsert, remove: kept.remove };
        let routes = if routes.is_empty() {
            None
        } else {
            let mut json = Vec::new();
            write_collection_delta(&mut json, &routes, &old, &new)?;
            Some(json)
        };
        if !patches.is_empty() {
            patches.push(b']');
        }
        Ok(RoutesDelta { routes, virtual_hosts: (!patches.is_empty()).then_some(patches) })
    }
}

/// The route configs' part of a delta, as JSON; `None` for each when empty.
#[derive(Debug)]
pub struct RoutesDelta {
    /// `routes`: a `CollectionDelta` of route configs.
    pub routes: Option<Vec<u8>>,
    /// `virtualHosts`: a list of `RouteVirtualHosts`.
    pub virtual_hosts: Option<Vec<u8>>,
}

/// Writes `plan` from `old` to `new` as serde_json writes a `CollectionDelta`:
/// `{"upsert":[{"at":i,"item":..}],"remove":[..]}`, empty lists left out.
fn write_collection_delta(
    json: &mut Vec<u8>,
    plan: &Plan,
    old: &[(&str, &[u8])],
    new: &[(&str, &[u8])],
) -> Result<(), serde_json::Error> {
    json.push(b'{');
    if !plan.upsert.is_empty() {
        json.extend_from_slice(b"\"upsert\":[");
        for (k, &i) in plan.upsert.iter().enumerate() {
            if k > 0 {
                json.push(b',');
            }
            json.extend_from_slice(format!("{{\"at\":{i},\"item\":").as_bytes());
            json.extend_from_slice(new.get(i).map_or(&b"null"[..], |(_, bytes)| bytes));
            json.push(b'}');
        }
        json.push(b']');
    }
    if !plan.remove.is_empty() {
        if !plan.upsert.is_empty() {
            json.push(b',');
        }
        json.extend_from_slice(b"\"remove\":");
        let names: Vec<&str> =
            plan.remove.iter().filter_map(|&j| old.get(j)).map(|(name, _)| *name).collect();
        serde_json::to_writer(&mut *json, &names)?;
    }
    json.push(b'}');
    Ok(())
}
