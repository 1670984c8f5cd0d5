//! Values shared while something holds them: the store's way of handing the same pool or state
//! to every index that asks for the same key, without keeping what no index uses any more.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Weak};

/// The value under `key` while something still holds it, else a new one from `make`,
/// remembered weakly: a new config reuses warm connections and kept state, a dropped one lets
/// them go.
pub fn shared<K: Hash + Eq, V, E>(
    map: &mut HashMap<K, Weak<V>>,
    key: K,
    make: impl FnOnce() -> Result<V, E>,
) -> Result<Arc<V>, E> {
    if let Some(value) = map.get(&key).and_then(Weak::upgrade) {
        return Ok(value);
    }
    let value = Arc::new(make()?);
    map.insert(key, Arc::downgrade(&value));
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    #[test]
    fn a_value_is_shared_while_held_and_made_anew_once_dropped() {
        let mut map: HashMap<&str, Weak<u32>> = HashMap::new();
        let mut made = 0;
        let mut make = || -> Result<u32, Infallible> {
            made += 1;
            Ok(made)
        };
        let Ok(first) = shared(&mut map, "a", &mut make);
        let Ok(again) = shared(&mut map, "a", &mut make);
        assert!(Arc::ptr_eq(&first, &again));
        drop((first, again));
        let Ok(fresh) = shared(&mut map, "a", &mut make);
        assert_eq!(*fresh, 2);
        let failed: Result<Arc<u32>, &str> = shared(&mut HashMap::new(), "a", || Err("bad identities"));
        assert_eq!(failed.err(), Some("bad identities"));
    }
}
