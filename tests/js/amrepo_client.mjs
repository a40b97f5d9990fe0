// A stock @automerge/automerge-repo client for tests/tests/automerge_repo_interop.rs.
//
// Usage: node amrepo_client.mjs <mode> <ws-url> <automerge-url> [field] [value-json] [check-url]
//   change <ws> <url> <field> <value> <check-url>
//                                      find the document, set doc[field] = value, then poll the
//                                      node's HTTP API (check-url, a household's JSON) until its
//                                      profile or private part shows the value
//   watch  <ws> <url> <field> <value>  find the document, print "READY <doc-json>", then wait until
//                                      doc[field] equals value (a change made on the node)
//   unavailable <ws> <url>             expect find() to fail as unavailable
//   refused <ws> <url> <field> <value> <url2> <field2> <value2> <check-url2>
//                                      make a change the node must refuse on the first document,
//                                      then a valid one on the second over the same connection
//                                      and wait (as `change`) until the node stored the second
// Prints one line per step on stdout and exits 0 on success, 1 on failure or after 30 s.
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

const args = process.argv.slice(2)
const [mode, wsUrl, docUrl, field, valueJson] = args
const value = valueJson === undefined ? undefined : JSON.parse(valueJson)

const deadline = setTimeout(() => {
  console.log("TIMEOUT")
  process.exit(1)
}, 30_000)

const adapter = new WebSocketClientAdapter(wsUrl, 1000)
const repo = new Repo({ network: [adapter] })

function done(code, line) {
  console.log(line)
  clearTimeout(deadline)
  // Give the socket a moment to flush, then leave without waiting for reconnect timers.
  setTimeout(() => process.exit(code), 50)
}

async function waitFor(cond) {
  while (!cond()) await new Promise(r => setTimeout(r, 20))
}

// Sets doc[field] = value, then polls the node's HTTP API (checkUrl, a household's JSON) until
// its profile or private part shows the value.
async function changeAndWait(handle, field, value, checkUrl) {
  handle.change(d => {
    d[field] = value
  })
  console.log("CHANGED locally")
  const want = JSON.stringify(value)
  for (;;) {
    // The node's API needs a session: the test passes its cookie (`name=value`) in CHECK_COOKIE.
    const resp = await fetch(checkUrl, { headers: { cookie: process.env.CHECK_COOKIE ?? "" } })
    const body = await resp.json()
    const part = field in (body.profile ?? {}) ? body.profile : body.private ?? {}
    if (JSON.stringify(part[field]) === want) return
    await new Promise(r => setTimeout(r, 50))
  }
}

try {
  if (mode === "unavailable") {
    try {
      const handle = await repo.find(docUrl)
      done(2, "GOT " + JSON.stringify(handle.doc()))
    } catch (e) {
      done(/unavailable/i.test(String(e)) ? 0 : 1, "UNAVAILABLE " + String(e))
    }
  } else {
    const handle = await repo.find(docUrl)
    if (mode === "watch") {
      console.log("READY " + JSON.stringify(handle.doc()))
      await waitFor(() => JSON.stringify(handle.doc()[field]) === JSON.stringify(value))
      done(0, "SAW " + JSON.stringify(handle.doc()))
    } else if (mode === "change") {
      await changeAndWait(handle, field, value, args[5])
      done(0, "STORED " + JSON.stringify(value))
    } else if (mode === "refused") {
      handle.change(d => {
        d[field] = value
      })
      console.log("CHANGED first document locally")
      const second = await repo.find(args[5])
      await changeAndWait(second, args[6], JSON.parse(args[7]), args[8])
      done(0, "STORED second document")
    } else {
      done(1, "unknown mode " + mode)
    }
  }
} catch (e) {
  done(1, "ERROR " + (e && e.stack ? e.stack : String(e)))
}
