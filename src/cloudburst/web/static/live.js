// The live stream: one EventSource per page, fed by the daemon's own events.
// Views register a handler; a "resync" (changes were dropped) reloads the view.

const handlers = new Set();
let source = null;
let status = () => {};

export function onChanges(handler) {
  handlers.add(handler);
  return () => handlers.delete(handler);
}

export function startLive(setStatus) {
  status = setStatus;
  stopLive();
  source = new EventSource("/api/v1/events");
  source.addEventListener("hello", () => status("live"));
  source.addEventListener("changes", (event) => {
    const batch = JSON.parse(event.data);
    for (const handler of handlers) handler(batch);
  });
  source.addEventListener("resync", () => {
    for (const handler of handlers) handler({ resync: true, vms: [], hosts: [], timeline: [] });
  });
  source.addEventListener("logout", () => {
    stopLive();
    window.dispatchEvent(new CustomEvent("cb-logged-out"));
  });
  source.onerror = () => status("reconnecting");
}

export function stopLive() {
  if (source) source.close();
  source = null;
  status("");
}
