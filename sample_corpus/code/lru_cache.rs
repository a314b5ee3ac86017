// A least-recently-used cache with a fixed capacity.
// When the cache is full, inserting a new key evicts the entry that was used longest ago.
use std::collections::{HashMap, VecDeque};

pub struct LruCache<V> {
    capacity: usize,
    map: HashMap<String, V>,
    order: VecDeque<String>, // front = least recently used
}

impl<V> LruCache<V> {
    pub fn new(capacity: usize) -> Self {
        LruCache { capacity, map: HashMap::new(), order: VecDeque::new() }
    }

    pub fn get(&mut self, key: &str) -> Option<&V> {
        if self.map.contains_key(key) {
            self.touch(key);
        }
        self.map.get(key)
    }

    pub fn put(&mut self, key: String, value: V) {
        if self.map.len() == self.capacity && !self.map.contains_key(&key) {
            if let Some(oldest) = self.order.pop_front() {
                self.map.remove(&oldest); // evict the least recently used entry
            }
        }
        self.touch(&key);
        self.map.insert(key, value);
    }

    fn touch(&mut self, key: &str) {
        self.order.retain(|k| k != key);
        self.order.push_back(key.to_string());
    }
}
