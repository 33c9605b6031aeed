import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { type Message, type ReadersList } from "../../../js/src/index.js";
import { bodyText, preview } from "../format.js";
import { formatFull, t } from "../i18n.js";
import type { Session } from "../session.js";
import { Avatar, Dialog, EmojiGrid } from "./common.js";
import { Icon } from "./icons.js";
import { type MessageActions, MessageItem } from "./message.js";

const TYPING_EVERY_MS = 2_000;
const DRAFT_SAVE_MS = 1_000;

function Subtitle(props: { session: Session; conv: string }) {
  const s = props.session;
  const c = s.convs.get(props.conv);
  if (!c) return null;
  const typing = s.typingIn(c.conv);
  if (typing.length) {
    const text = typing.length === 1 ? t("isTyping", { who: s.name(typing[0] as string) }) : t("typingMany", { n: typing.length });
    return (
      <p class="subtitle typing-text" aria-live="polite">
        {text}
      </p>
    );
  }
  if (c.kind === "group") return <p class="subtitle">{t("members", { n: c.member_count })}</p>;
  const p = s.presence.get(c.peer);
  if (!p || s.status !== "online") return <p class="subtitle" />; // presence is only known while connected
  return (
    <p class={`subtitle${p.online ? " online" : ""}`} data-presence={p.online ? "online" : "offline"}>
      {p.online ? t("online") : p.last_seen ? t("lastSeen", { when: formatFull(p.last_seen) }) : t("offline")}
    </p>
  );
}

function MessageList(props: { session: Session; conv: string; actions: MessageActions; picking: number | null }) {
  const s = props.session;
  const messages = s.shown(props.conv);
  const pending = s.pending.filter((p) => p.conv === props.conv);
  const uploads = s.uploads.filter((u) => u.conv === props.conv);
  const history = s.histories.get(props.conv);
  const scroller = useRef<HTMLDivElement>(null);
  const before = useRef({ first: 0, height: 0, top: 0, nearBottom: true, count: 0 });
  const el = scroller.current;
  // Read the scroll position before the DOM changes (render runs before the commit).
  if (el) {
    before.current.height = el.scrollHeight;
    before.current.top = el.scrollTop;
    before.current.nearBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
  }
  const first = messages[0]?.seq ?? 0;
  const count = messages.length + pending.length + uploads.length;

  useLayoutEffect(() => {
    const node = scroller.current;
    if (!node) return;
    const was = before.current;
    if (was.first && first < was.first) node.scrollTop = was.top + (node.scrollHeight - was.height); // older page prepended
    else if (was.nearBottom || was.count === 0) node.scrollTop = node.scrollHeight;
    was.first = first;
    was.count = count;
    const focus = s.focus;
    if (focus?.conv === props.conv) {
      const target = node.querySelector<HTMLElement>(`li.msg[data-seq="${focus.seq}"]`);
      if (target) {
        s.focus = null;
        target.classList.add("found");
        target.scrollIntoView({ block: "center" });
        target.focus();
        return;
      }
    }
    // A short first page does not fill the view: load more until it does (or there is no more).
    if (node.scrollHeight <= node.clientHeight + 10 && history?.more && !history.loading) void s.loadOlder(props.conv);
  });

  return (
    <div
      class="messages"
      ref={scroller}
      role="log"
      aria-label={t("messages")}
      aria-live="polite"
      tabIndex={0}
      onScroll={(e) => {
        if (e.currentTarget.scrollTop < 120) void s.loadOlder(props.conv);
      }}
      onKeyDown={(e) => {
        // Arrow keys walk the messages; Tab then reaches the focused message's actions.
        if (e.key !== "ArrowUp" && e.key !== "ArrowDown") return;
        const nodes = [...e.currentTarget.querySelectorAll<HTMLElement>("li.msg")];
        const at = nodes.indexOf((document.activeElement as HTMLElement)?.closest("li.msg") as HTMLElement);
        const next = at < 0 ? nodes.length - 1 : at + (e.key === "ArrowDown" ? 1 : -1);
        const target = nodes[Math.max(0, Math.min(nodes.length - 1, next))];
        if (target) {
          target.focus();
          e.preventDefault();
        }
      }}
    >
      <ol class="stack">
      {history?.loading ? <li class="system">{t("loadingOlder")}</li> : null}
      {history?.loaded && !history.more && !history.loading ? <li class="system start">{t("historyStart")}</li> : null}
      {messages.map((m) => (
        <MessageItem key={m.seq} m={m} session={s} actions={props.actions} picking={props.picking === m.seq} />
      ))}
      {pending.map((p) => (
        <li key={p.cmid} class="msg mine pending" data-cmid={p.cmid}>
          <div class="bubble">
            <p class="text">{bodyText(p.kind, p.body, (u) => s.name(u))}</p>
            <span class="meta">
              {p.error ? (
                <>
                  <span class="error">
                    {t("failed")}: {p.error.message}
                  </span>{" "}
                  <button type="button" class="link" onClick={() => void s.client?.outbox?.retry(p.cmid)}>
                    {t("retry")}
                  </button>{" "}
                  <button
                    type="button"
                    class="link"
                    onClick={() => {
                      void s.client?.outbox?.discard(p.cmid);
                      s.pending = s.pending.filter((x) => x.cmid !== p.cmid);
                      s.changed();
                    }}
                  >
                    {t("discard")}
                  </button>
                </>
              ) : (
                <span class="marks" aria-label={t("sending")} title={t("sending")}>
                  <Icon name="clock" size={12} />
                </span>
              )}
            </span>
          </div>
        </li>
      ))}
      {uploads.map((u) => (
        <li key={u.id} class="msg mine pending upload">
          <div class="bubble">
            <p class="text">{t("uploading", { name: u.name })}</p>
          </div>
        </li>
      ))}
      </ol>
    </div>
  );
}

function Composer(props: { session: Session; conv: string; replyTo: Message | null; editing: Message | null; onDone: () => void; onEditLast: () => void }) {
  const s = props.session;
  const c = s.convs.get(props.conv);
  const [text, setText] = useState(c?.draft ?? "");
  const [emoji, setEmoji] = useState(false);
  const input = useRef<HTMLTextAreaElement>(null);
  const picker = useRef<HTMLInputElement>(null);
  const lastTyping = useRef(0);
  const savedDraft = useRef(c?.draft ?? "");
  const latest = useRef(text);
  latest.current = text;

  useEffect(() => {
    if (props.editing) setText(String(props.editing.body["text"] ?? ""));
    input.current?.focus();
  }, [props.editing, props.replyTo]);

  // The draft is a conversation setting: saved a second after typing stops and when leaving, shared by devices.
  useEffect(() => {
    if (props.editing) return;
    const timer = setTimeout(() => saveDraft(text), DRAFT_SAVE_MS);
    return () => clearTimeout(timer);
  }, [text]);
  useEffect(() => () => saveDraft(latest.current), []);

  function saveDraft(value: string): void {
    if (props.editing || value === savedDraft.current) return;
    savedDraft.current = value;
    void s.setFlag(props.conv, { draft: value.slice(0, 4096) });
  }

  async function submit(): Promise<void> {
    const value = text.trim();
    if (!value) return;
    if (props.editing) {
      const m = props.editing;
      const ok = await s.act(() => s.client!.edit(props.conv, m.seq, value, m.version));
      if (!ok) return;
    } else {
      await s.act(() => s.sendText(props.conv, value, props.replyTo?.seq ?? null));
    }
    setText("");
    if (savedDraft.current) {
      savedDraft.current = "";
      void s.setFlag(props.conv, { draft: "" });
    }
    props.onDone();
  }

  return (
    <form
      class="composer"
      onSubmit={(e) => {
        e.preventDefault();
        void submit();
      }}
    >
      {props.replyTo || props.editing ? (
        <div class="composing" role="status">
          <span>
            {props.editing ? t("editing") : t("replyingTo", { who: s.name(props.replyTo!.sender) })}:{" "}
            <em>{preview(props.editing ?? props.replyTo, (u) => s.name(u))}</em>
          </span>
          <button type="button" class="icon" aria-label={t("cancel")} onClick={() => (setText(props.editing ? "" : text), props.onDone())}>
            <Icon name="close" size={16} />
          </button>
        </div>
      ) : null}
      {emoji ? (
        <EmojiGrid
          label={t("emoji")}
          onPick={(e) => {
            setText(text + e);
            input.current?.focus();
          }}
        />
      ) : null}
      <div class="composer-row">
        <button type="button" class="icon" aria-label={t("emoji")} aria-expanded={emoji} onClick={() => setEmoji(!emoji)}>
          <Icon name="smile" />
        </button>
        <button type="button" class="icon" aria-label={t("attach")} title={t("attach")} onClick={() => picker.current?.click()}>
          <Icon name="clip" />
        </button>
        <input
          ref={picker}
          type="file"
          multiple
          hidden
          name="attach"
          onChange={(e) => {
            for (const file of e.currentTarget.files ?? []) void s.sendFile(props.conv, file);
            e.currentTarget.value = "";
          }}
        />
        <textarea
          ref={input}
          rows={1}
          aria-label={t("messageInput")}
          placeholder={t("messageInput")}
          value={text}
          maxLength={8000}
          onInput={(e) => {
            setText(e.currentTarget.value);
            const now = Date.now();
            if (e.currentTarget.value && now - lastTyping.current > TYPING_EVERY_MS) {
              lastTyping.current = now;
              void s.client?.typing(props.conv).catch(() => undefined);
            }
          }}
          onPaste={(e) => {
            // Pasted files (a screenshot, files copied in a file manager) are sent; pasted text is typed.
            const files = [...(e.clipboardData?.files ?? [])];
            if (!files.length) return;
            e.preventDefault();
            for (const file of files) void s.sendFile(props.conv, file);
          }}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
              e.preventDefault();
              void submit();
            } else if (e.key === "Escape" && (props.replyTo || props.editing)) {
              e.preventDefault();
              if (props.editing) setText("");
              props.onDone();
            } else if (e.key === "ArrowUp" && !text) {
              e.preventDefault();
              props.onEditLast();
            }
          }}
        />
        <button type="submit" class="primary" disabled={!text.trim()}>
          {t("send")}
        </button>
      </div>
    </form>
  );
}

function ForwardDialog(props: { session: Session; m: Message; onClose: () => void }) {
  const s = props.session;
  return (
    <Dialog title={t("forwardTo")} onClose={props.onClose}>
      <ul class="pick-list">
        {s.ordered().map((c) => (
          <li key={c.conv}>
            <button
              type="button"
              onClick={async () => {
                if (await s.act(() => s.client!.forward(props.m.conv, [props.m.seq], c.conv))) props.onClose();
              }}
            >
              <Avatar id={c.conv} label={s.title(c)} /> {s.title(c)}
            </button>
          </li>
        ))}
      </ul>
    </Dialog>
  );
}

function ReadersDialog(props: { session: Session; m: Message; onClose: () => void }) {
  const s = props.session;
  const [readers, setReaders] = useState<ReadersList | null>(null);
  useEffect(() => {
    void s.client!.readers(props.m.conv, props.m.seq).then(
      (r) => {
        setReaders(r);
        void s.loadNames([...r.read, ...r.unread]);
      },
      (err) => s.fail(err),
    );
  }, []);
  return (
    <Dialog title={t("readBy")} onClose={props.onClose}>
      {readers ? (
        <div class="readers">
          <h3>
            {t("readBy")} ({readers.read.length})
          </h3>
          <ul class="read-list">
            {readers.read.map((u) => (
              <li key={u}>{s.name(u)}</li>
            ))}
          </ul>
          <h3>
            {t("notReadBy")} ({readers.unread.length})
          </h3>
          <ul class="unread-list">
            {readers.unread.map((u) => (
              <li key={u}>{s.name(u)}</li>
            ))}
          </ul>
        </div>
      ) : (
        <p>…</p>
      )}
    </Dialog>
  );
}

export function ChatPane(props: { session: Session; conv: string; onGroupInfo: () => void; onBack: () => void }) {
  const s = props.session;
  const c = s.convs.get(props.conv);
  const [replyTo, setReplyTo] = useState<Message | null>(null);
  const [editing, setEditing] = useState<Message | null>(null);
  const [forwarding, setForwarding] = useState<Message | null>(null);
  const [readersOf, setReadersOf] = useState<Message | null>(null);
  const [picking, setPicking] = useState<number | null>(null);
  const [dropping, setDropping] = useState(false);
  if (!c) return null;
  const title = s.title(c);
  const online = c.kind === "direct" ? s.presence.get(c.peer)?.online : undefined;

  const actions: MessageActions = {
    reply: (m) => (setEditing(null), setReplyTo(m)),
    edit: (m) => (setReplyTo(null), setEditing(m)),
    recall: (m) => void s.act(() => s.client!.recall(m.conv, m.seq)),
    forward: (m) => setForwarding(m),
    readers: (m) => setReadersOf(m),
    react: (m, emoji) => {
      setPicking(null);
      const mine = (m.reactions[emoji] ?? []).includes(s.me);
      void s.act(() => s.client!.react(m.conv, m.seq, emoji, { remove: mine }));
    },
    pickReaction: (m) => setPicking(m?.seq ?? null),
  };

  return (
    <section
      class={dropping ? "chat dropping" : "chat"}
      aria-label={title}
      data-drop-label={t("dropHere")}
      onDragOver={(e) => {
        if (c.left || !e.dataTransfer?.types.includes("Files")) return;
        e.preventDefault();
        setDropping(true);
      }}
      onDragLeave={(e) => {
        if (e.currentTarget === e.target) setDropping(false);
      }}
      onDrop={(e) => {
        setDropping(false);
        if (c.left || !e.dataTransfer?.files.length) return;
        e.preventDefault();
        for (const file of e.dataTransfer.files) void s.sendFile(c.conv, file);
      }}
    >
      <header class="chat-head">
        <button type="button" class="icon back" aria-label={t("back")} onClick={props.onBack}>
          <Icon name="back" />
        </button>
        <Avatar id={c.conv} label={title} online={online} />
        <div class="chat-title">
          <h2>{title}</h2>
          <Subtitle session={s} conv={c.conv} />
        </div>
        <div class="actions">
          <button type="button" class="icon" aria-pressed={c.pinned} aria-label={c.pinned ? t("unpin") : t("pin")} title={c.pinned ? t("unpin") : t("pin")} onClick={() => void s.setFlag(c.conv, { pinned: !c.pinned })}>
            <Icon name="pin" />
          </button>
          <button type="button" class="icon" aria-pressed={c.muted} aria-label={c.muted ? t("unmute") : t("mute")} title={c.muted ? t("unmute") : t("mute")} onClick={() => void s.setFlag(c.conv, { muted: !c.muted })}>
            <Icon name={c.muted ? "bellOff" : "bell"} />
          </button>
          {c.kind === "group" ? (
            <button type="button" class="icon" aria-label={t("groupInfo")} title={t("groupInfo")} onClick={props.onGroupInfo}>
              <Icon name="info" />
            </button>
          ) : null}
        </div>
      </header>
      <MessageList session={s} conv={c.conv} actions={actions} picking={picking} />
      {c.left ? null : (
        <Composer
          key={c.conv}
          session={s}
          conv={c.conv}
          replyTo={replyTo}
          editing={editing}
          onDone={() => (setReplyTo(null), setEditing(null))}
          onEditLast={() => {
            const own = s.shown(c.conv).filter((m) => m.sender === s.me && m.kind === "text" && m.state === "");
            const last = own[own.length - 1];
            if (last) actions.edit(last);
          }}
        />
      )}
      {forwarding ? <ForwardDialog session={s} m={forwarding} onClose={() => setForwarding(null)} /> : null}
      {readersOf ? <ReadersDialog session={s} m={readersOf} onClose={() => setReadersOf(null)} /> : null}
    </section>
  );
}
