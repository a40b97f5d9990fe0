// IndexedDB: records the cadre opened, cached lists, and the outbox of queued edits.
// Everything here survives closing the tab and rebooting the phone.
const DB = 'cunyun', VERSION = 1;
let dbp = null;

function open() {
  if (!dbp) {
    dbp = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB, VERSION);
      req.onupgradeneeded = () => {
        const db = req.result;
        db.createObjectStore('records', { keyPath: 'id' });
        db.createObjectStore('outbox', { keyPath: 'edit_id' });
        db.createObjectStore('kv', { keyPath: 'k' });
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }
  return dbp;
}

function run(store, mode, fn) {
  return open().then(db => new Promise((resolve, reject) => {
    const tx = db.transaction(store, mode);
    const s = tx.objectStore(store);
    let out;
    const r = fn(s);
    if (r) r.onsuccess = () => { out = r.result; };
    // Resolve only once the transaction is durable (committed).
    tx.oncomplete = () => resolve(out);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  }));
}

export const get = (store, key) => run(store, 'readonly', s => s.get(key));
export const put = (store, value) => run(store, 'readwrite', s => s.put(value));
export const del = (store, key) => run(store, 'readwrite', s => s.delete(key));
export const all = (store) => run(store, 'readonly', s => s.getAll());
export const clear = (store) => run(store, 'readwrite', s => s.clear());
export const kvGet = async (k) => (await get('kv', k))?.v;
export const kvPut = (k, v) => put('kv', { k, v });
