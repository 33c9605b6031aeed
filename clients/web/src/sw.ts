/**
 * The service worker of Web Push notifications (registered from the settings panel): shows what the server
 * pushes, and opens the app at the conversation when a notification is clicked.
 */
import { type PushPayload, type PushWorkerScope, openFromPush, showPush } from "../../js/src/index.js";

interface PushEventLike extends Event {
  data: { json(): unknown } | null;
  waitUntil(p: Promise<unknown>): void;
}
interface ClickEventLike extends Event {
  notification: Notification;
  waitUntil(p: Promise<unknown>): void;
}

const scope = self as unknown as PushWorkerScope & { addEventListener(type: string, listener: (e: Event) => void): void; registration: { scope: string } };

scope.addEventListener("push", (e) => {
  const event = e as PushEventLike;
  if (event.data) event.waitUntil(showPush(scope, event.data.json() as PushPayload));
});
scope.addEventListener("notificationclick", (e) => {
  const event = e as ClickEventLike;
  event.waitUntil(openFromPush(scope, event.notification, (data) => `${scope.registration.scope}#${encodeURIComponent(String(data["conv"] ?? ""))}`));
});
