// Service worker: keeps the app shell for offline use. API calls are not intercepted; the page
// keeps records in IndexedDB and queues edits itself.
const VERSION = 'cunyun-shell-__SHELL_VERSION__';
const SHELL = __SHELL_PATHS__;

self.addEventListener('install', (e) => {
  e.waitUntil(caches.open(VERSION).then(c => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (e) => {
  e.waitUntil(caches.keys()
    .then(keys => Promise.all(keys.filter(k => k !== VERSION).map(k => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener('fetch', (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== 'GET' || url.origin !== location.origin) return;
  const path = e.request.mode === 'navigate' && url.pathname === '/' ? '/' : url.pathname;
  if (!SHELL.includes(path)) return;
  // Cache first (fast on a slow phone, works offline); refresh the copy in the background.
  e.respondWith(caches.open(VERSION).then(async (cache) => {
    const hit = await cache.match(path);
    const fresh = fetch(path).then((resp) => {
      if (resp.ok) cache.put(path, resp.clone());
      return resp;
    });
    if (hit) {
      fresh.catch(() => {});
      return hit;
    }
    return fresh;
  }));
});
