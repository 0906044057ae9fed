// The page's link to the gateway: the iotgw client (client.js, the same module the gateway serves
// to other programs at /client.js) configured for this page: its own origin only, the token
// kept in sessionStorage for the tab, and a retry as soon as the browser is back online.

import { Client } from "./client.js";

const TOKEN_KEY = "iotgw.token";

// Same origin only: no URL parameter may point the page (and its token) at another server.
export function defaultUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}

/** The token this tab signed in with, if any. */
export function savedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Remember a token for this tab and connect with it. */
export function signIn(client, token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  client.retryNow();
}

/** The page's client, not yet started. */
export function pageClient(url = defaultUrl()) {
  const client = new Client(url, { token: savedToken });
  client.addEventListener("unauthorized", () => sessionStorage.removeItem(TOKEN_KEY));
  addEventListener("online", () => client.state.phase === "reconnecting" && client.retryNow());
  return client;
}
