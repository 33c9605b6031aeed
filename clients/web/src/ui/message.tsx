import type { Message } from "../../../js/src/index.js";
import { blurhashUrl } from "../blurhash.js";
import { bodyText, systemText } from "../format.js";
import { formatFull, formatTime, t } from "../i18n.js";
import type { Session } from "../session.js";
import { QUICK_REACTIONS } from "./common.js";

export interface MessageActions {
  reply(m: Message): void;
  edit(m: Message): void;
  recall(m: Message): void;
  forward(m: Message): void;
  readers(m: Message): void;
  react(m: Message, emoji: string): void;
  pickReaction(m: Message | null): void;
}

function sameOrigin(url: string): boolean {
  try {
    return new URL(url, location.href).origin === location.origin;
  } catch {
    return false;
  }
}

function size(bytes: unknown): string {
  const n = Number(bytes);
  if (!Number.isFinite(n) || n <= 0) return "";
  return n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** An uploaded image: its thumbnail (signed, same origin), sized before it loads; a click opens the original. */
function MediaImage(props: { m: Message; session: Session }) {
  const b = props.m.body;
  const urls = props.session.mediaUrls(String(b["media_id"]));
  const width = Number(b["thumb_width"] ?? b["width"]) || 240;
  const height = Number(b["thumb_height"] ?? b["height"]) || 180;
  if (urls === "failed") return <p class="text muted">{t("image")}</p>;
  const src = urls?.thumb ?? urls?.url;
  // The blurhash under the image until its thumbnail has loaded (a CSSOM style: the page's policy allows it).
  const blur = typeof b["blurhash"] === "string" ? blurhashUrl(b["blurhash"]) : null;
  const style = blur ? { backgroundImage: `url("${blur}")` } : undefined;
  return (
    <button type="button" class="image-button" aria-label={t("openImage")} onClick={() => urls && window.open(urls.url, "_blank", "noopener")}>
      {src && sameOrigin(src) ? (
        <img class="image" src={src} width={width} height={height} alt={t("image")} style={style} />
      ) : (
        <span class="image placeholder" style={style}>
          {blur ? null : t("image")}
        </span>
      )}
    </button>
  );
}

/** An uploaded file: a fresh signed URL is asked for on each click (they last minutes). */
function MediaFile(props: { m: Message; session: Session }) {
  const b = props.m.body;
  const name = String(b["name"] ?? t("file"));
  return (
    <button
      type="button"
      class="file link"
      onClick={async () => {
        const urls = await props.session.fetchMedia(String(b["media_id"]));
        if (urls === "failed") return props.session.fail(new Error(t("fileGone")));
        const a = document.createElement("a");
        a.href = urls.url;
        a.download = name;
        a.rel = "noopener";
        a.click();
      }}
    >
      <span aria-hidden="true">📎</span> {name} <span class="muted">{size(b["size"])}</span>
    </button>
  );
}

function Content(props: { m: Message; session: Session }) {
  const { m, session } = props;
  const name = (u: string): string => session.name(u);
  const b = m.body;
  const url = typeof b["url"] === "string" ? b["url"] : "";
  if (typeof b["media_id"] === "string") {
    if (m.kind === "image") return <MediaImage m={m} session={session} />;
    return <MediaFile m={m} session={session} />;
  }
  switch (m.kind) {
    case "text":
      return <p class="text">{String(b["text"] ?? "")}</p>;
    case "image": {
      // Only this server's images load (the page's Content-Security-Policy); others are a link.
      const thumb = typeof b["thumbnail"] === "string" ? b["thumbnail"] : url;
      return sameOrigin(thumb) ? (
        <a href={url} target="_blank" rel="noopener noreferrer">
          <img class="image" src={thumb} alt={String(b["name"] ?? t("image"))} loading="lazy" />
        </a>
      ) : (
        <a href={url} target="_blank" rel="noopener noreferrer">
          {t("image")} {String(b["name"] ?? url)}
        </a>
      );
    }
    case "file":
    case "voice":
    case "video":
      return (
        <a class="file" href={url} target="_blank" rel="noopener noreferrer" download={String(b["name"] ?? "")}>
          <span aria-hidden="true">📎</span> {bodyText(m.kind, b, name)} <span class="muted">{size(b["size"])}</span>
        </a>
      );
    case "merged": {
      const items = Array.isArray(b["items"]) ? (b["items"] as Array<{ sender: string; kind: string; body: Record<string, unknown> }>) : [];
      return (
        <div class="merged">
          <strong>
            {t("merged")}
            {b["title"] ? `: ${String(b["title"])}` : ""}
          </strong>
          <ul>
            {items.slice(0, 20).map((it, i) => (
              <li key={i}>
                <b>{name(it.sender)}:</b> {bodyText(it.kind, it.body, name)}
              </li>
            ))}
          </ul>
        </div>
      );
    }
    default:
      return <p class="text">{bodyText(m.kind, b, name)}</p>;
  }
}

function Quote(props: { m: Message; session: Session }) {
  const q = props.m.body["reply_to"] as Record<string, unknown> | undefined;
  if (!q || typeof q !== "object") return null;
  const sender = String(q["sender"] ?? "");
  const gone = q["state"] === "recalled" ? t("recalled") : q["state"] === "deleted" ? t("deleted") : "";
  return (
    <blockquote class="quote" data-seq={String(q["seq"] ?? "")}>
      <b>{props.session.name(sender)}</b> {gone || String(q["snippet"] ?? "")}
    </blockquote>
  );
}

/** The sender's own message: ✓ stored, ✓✓ delivered, and read (direct conversations). */
function Marks(props: { m: Message; session: Session }) {
  const { m, session } = props;
  const c = session.convs.get(m.conv);
  if (c?.kind !== "direct") return null;
  const read = (session.peerRead.get(m.conv) ?? 0) >= m.seq;
  const delivered = read || (session.peerDelivered.get(m.conv) ?? 0) >= m.seq;
  const label = read ? t("read") : delivered ? t("delivered") : t("sent");
  return (
    <span class={`marks${read ? " read" : ""}`} title={label} aria-label={label} data-mark={read ? "read" : delivered ? "delivered" : "sent"}>
      {delivered ? "✓✓" : "✓"}
    </span>
  );
}

export function MessageItem(props: { m: Message; session: Session; actions: MessageActions; picking: boolean }) {
  const { m, session, actions } = props;
  if (m.kind === "system") {
    return (
      <li class="system" data-seq={m.seq}>
        {systemText(m.body, (u) => session.name(u))}
      </li>
    );
  }
  const mine = m.sender === session.me;
  const c = session.convs.get(m.conv);
  const gone = m.state !== "";
  const forwarded = m.body["forwarded"] as { sender?: string } | undefined;
  const canModerate = c?.kind === "group" && (c.role === "owner" || c.role === "admin");
  const who = mine ? t("you") : session.name(m.sender);
  return (
    <li
      class={`msg${mine ? " mine" : ""}${gone ? " gone" : ""}`}
      data-seq={m.seq}
      tabIndex={-1}
      aria-label={`${who}, ${formatFull(m.ts)}`}
    >
      {!mine && c?.kind === "group" ? <span class="sender">{who}</span> : null}
      <div class="bubble">
        {gone ? (
          <p class="text muted">{m.state === "recalled" ? t("recalled") : m.state === "deleted" ? t("deleted") : t("hiddenForMe")}</p>
        ) : (
          <>
            {forwarded ? <p class="forwarded">{t("forwarded", { who: session.name(forwarded.sender ?? "") })}</p> : null}
            <Quote m={m} session={session} />
            <Content m={m} session={session} />
          </>
        )}
        <span class="meta">
          {m.edited_at && !gone ? <span class="edited">{t("edited")}</span> : null}
          <time dateTime={new Date(m.ts).toISOString()} title={formatFull(m.ts)}>
            {formatTime(m.ts)}
          </time>
          {mine && !gone ? <Marks m={m} session={session} /> : null}
        </span>
      </div>
      {!gone && Object.keys(m.reactions).length ? (
        <div class="reactions">
          {Object.entries(m.reactions).map(([emoji, users]) => (
            <button
              type="button"
              key={emoji}
              class={users.includes(session.me) ? "reaction own" : "reaction"}
              aria-pressed={users.includes(session.me)}
              aria-label={`${emoji} ${users.length}: ${users.map((u) => session.name(u)).join(", ")}`}
              onClick={() => actions.react(m, emoji)}
            >
              {emoji} {users.length}
            </button>
          ))}
        </div>
      ) : null}
      {!gone ? (
        <div class="msg-actions" role="toolbar" aria-label={t("messageActions")}>
          <button type="button" onClick={() => actions.reply(m)}>
            {t("reply")}
          </button>
          <button type="button" aria-expanded={props.picking} onClick={() => actions.pickReaction(props.picking ? null : m)}>
            {t("react")}
          </button>
          {mine && m.kind === "text" ? (
            <button type="button" onClick={() => actions.edit(m)}>
              {t("edit")}
            </button>
          ) : null}
          {mine || canModerate ? (
            <button type="button" onClick={() => actions.recall(m)}>
              {t("recall")}
            </button>
          ) : null}
          <button type="button" onClick={() => actions.forward(m)}>
            {t("forward")}
          </button>
          {mine && c?.kind === "group" ? (
            <button type="button" onClick={() => actions.readers(m)}>
              {t("readBy")}
            </button>
          ) : null}
        </div>
      ) : null}
      {props.picking ? (
        <div class="emoji-grid reactions-pick" role="group" aria-label={t("react")}>
          {QUICK_REACTIONS.map((e) => (
            <button type="button" key={e} aria-label={e} onClick={() => actions.react(m, e)}>
              {e}
            </button>
          ))}
        </div>
      ) : null}
    </li>
  );
}
