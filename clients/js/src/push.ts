/**
 * Web Push (docs/protocol.md §11, `PUT /v1/me/devices/{device}/push`): subscribe the browser through its
 * service worker and register the subscription for this device, and, inside the service worker, show what the
 * server pushes.
 *
 * The application server key (VAPID public key) is the server's: `data_dir/vapid.pem`'s public half, or the
 * operator's `FLARE_WEBPUSH_*` key. The server does not publish it over the API yet, so the app passes it in
 * (`applicationServerKey`, base64url); when an endpoint exists, it is the one thing to fetch here first.
 */
import type { Json, RestClient } from "./rest.js";

export interface WebPushOptions {
  rest: RestClient;
  /** The `device` this browser connects as (`FlareClient`'s). */
  device: string;
  /** The server's VAPID public key, base64url (uncompressed P-256 point). */
  applicationServerKey: string;
  /** A registration to use; default: register `serviceWorkerUrl`. */
  registration?: ServiceWorkerRegistration;
  /** The service worker script to register when no `registration` is given (default `"/flare-sw.js"`). */
  serviceWorkerUrl?: string;
  appId?: string;
  locale?: string;
}

/**
 * Asks for notification permission if needed, subscribes (or reuses the subscription), and registers it as
 * `device`'s push target. Resolves with the push target; throws `Error` when permission is denied or the
 * browser has no Push API.
 */
export async function subscribeWebPush(options: WebPushOptions): Promise<Json> {
  if (typeof navigator === "undefined" || !("serviceWorker" in navigator) || typeof PushManager === "undefined") {
    throw new Error("this browser has no Push API");
  }
  if (typeof Notification !== "undefined" && Notification.permission !== "granted") {
    if ((await Notification.requestPermission()) !== "granted") throw new Error("notification permission was not granted");
  }
  const registration =
    options.registration ?? (await navigator.serviceWorker.register(options.serviceWorkerUrl ?? "/flare-sw.js", { type: "module" }));
  await navigator.serviceWorker.ready;
  const subscription =
    (await registration.pushManager.getSubscription()) ??
    (await registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: base64UrlToBytes(options.applicationServerKey),
    }));
  const json = subscription.toJSON();
  const keys = json.keys ?? {};
  if (!json.endpoint || !keys["p256dh"] || !keys["auth"]) throw new Error("the push subscription has no endpoint or keys");
  return options.rest.registerPush(options.device, "webpush", json.endpoint, {
    keys: { p256dh: keys["p256dh"], auth: keys["auth"] },
    ...(options.appId !== undefined ? { appId: options.appId } : {}),
    ...(options.locale !== undefined ? { locale: options.locale } : {}),
  });
}

/** Unsubscribes the browser and removes `device`'s push target (call it at logout). */
export async function unsubscribeWebPush(options: { rest: RestClient; device: string; registration?: ServiceWorkerRegistration }): Promise<void> {
  const registration = options.registration ?? (await navigator.serviceWorker.getRegistration());
  await (await registration?.pushManager.getSubscription())?.unsubscribe();
  await options.rest.unregisterPush(options.device);
}

/** What the server's Web Push payload holds (`event.data.json()` in the service worker). */
export interface PushPayload {
  category: "message" | "mention" | "call" | "system" | "badge";
  title?: string;
  body?: string;
  /** The collapse id: a newer notification with the same tag replaces the shown one. */
  tag?: string;
  /** The user's total unread count. */
  badge?: number;
  /** A badge update or a withdrawal, nothing to show. */
  silent?: boolean;
  locale?: string;
  /** `conv`, `seq`, `msg_id`, `kind`, `sender`, … for the app. */
  data: Record<string, string>;
}

/** The service worker's global scope, as far as these helpers use it. */
export interface PushWorkerScope {
  registration: ServiceWorkerRegistration;
  navigator?: { setAppBadge?(n: number): Promise<void>; clearAppBadge?(): Promise<void> };
  clients: {
    matchAll(options: { type: "window"; includeUncontrolled: boolean }): Promise<ReadonlyArray<{ url: string; focus(): Promise<unknown> }>>;
    openWindow(url: string): Promise<unknown>;
  };
}

/**
 * Shows a pushed notification (or, for a silent one, updates the app badge and closes the notifications of
 * its tag). Use it in the service worker: `self.addEventListener("push", (e) => e.waitUntil(showPush(self,
 * e.data.json())))`.
 */
export async function showPush(scope: PushWorkerScope, push: PushPayload): Promise<void> {
  if (push.badge !== undefined) {
    await (push.badge > 0 ? scope.navigator?.setAppBadge?.(push.badge) : scope.navigator?.clearAppBadge?.());
  }
  if (push.silent) {
    if (push.tag) for (const n of await scope.registration.getNotifications({ tag: push.tag })) n.close();
    return;
  }
  await scope.registration.showNotification(push.title ?? "", {
    body: push.body ?? "",
    data: push.data,
    ...(push.tag ? { tag: push.tag } : {}),
  });
}

/**
 * Handles a click on a notification: focuses a window of the app (or opens `urlFor(data)`). Use it in the
 * service worker: `self.addEventListener("notificationclick", (e) => e.waitUntil(openFromPush(self, e.notification,
 * (d) => "/app#" + d.conv)))`.
 */
export async function openFromPush(
  scope: PushWorkerScope,
  notification: { data: unknown; close(): void },
  urlFor: (data: Record<string, string>) => string,
): Promise<void> {
  notification.close();
  const url = urlFor((notification.data ?? {}) as Record<string, string>);
  const windows = await scope.clients.matchAll({ type: "window", includeUncontrolled: true });
  const open = windows.find((w) => w.url.endsWith(url)) ?? windows[0];
  await (open ? open.focus() : scope.clients.openWindow(url));
}

/** base64url (as VAPID keys are written) to bytes. */
export function base64UrlToBytes(text: string): Uint8Array<ArrayBuffer> {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
  const raw = atob(base64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}
