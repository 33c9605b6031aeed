import { useState } from "preact/hooks";
import { preview } from "../format.js";
import { formatTime, t } from "../i18n.js";
import { EVENT_KINDS, type Session } from "../session.js";
import { Avatar } from "./common.js";
import { Icon } from "./icons.js";

export function ConversationList(props: {
  session: Session;
  onNewChat: () => void;
  onNewGroup: () => void;
  onSettings: () => void;
  onSearch: () => void;
}) {
  const s = props.session;
  const [filter, setFilter] = useState("");
  const name = (u: string): string => s.name(u);
  const items = s.ordered().filter((c) => !filter || s.title(c).toLowerCase().includes(filter.toLowerCase()));

  // Arrow keys move between conversations; Enter or Space opens one (the list is one tab stop).
  function onKey(e: KeyboardEvent): void {
    if (!["ArrowDown", "ArrowUp", "Home", "End"].includes(e.key)) return;
    const nodes = [...(e.currentTarget as HTMLElement).querySelectorAll<HTMLElement>("[role=option]")];
    const at = nodes.indexOf(document.activeElement as HTMLElement);
    const next = e.key === "Home" ? 0 : e.key === "End" ? nodes.length - 1 : at + (e.key === "ArrowDown" ? 1 : -1);
    nodes[Math.max(0, Math.min(nodes.length - 1, next))]?.focus();
    e.preventDefault();
  }

  return (
    <nav class="sidebar" aria-label={t("conversations")}>
      <header class="sidebar-head">
        <h1 class="brand">
          <span aria-hidden="true">⚡</span> {t("appName")}
        </h1>
        <div class="actions">
          <button type="button" class="icon" aria-label={t("search")} title={t("search")} onClick={props.onSearch}>
            <Icon name="search" />
          </button>
          <button type="button" class="icon" aria-label={t("newChat")} title={t("newChat")} onClick={props.onNewChat}>
            <Icon name="edit" />
          </button>
          <button type="button" class="icon" aria-label={t("newGroup")} title={t("newGroup")} onClick={props.onNewGroup}>
            <Icon name="users" />
          </button>
          <button type="button" class="icon" aria-label={t("settings")} title={t("settings")} onClick={props.onSettings}>
            <Icon name="sliders" />
          </button>
        </div>
      </header>
      {s.status !== "online" ? (
        <p class="banner" role="status">
          {s.status === "connecting" ? t("connecting") : t("reconnecting")}
        </p>
      ) : null}
      <input
        class="filter"
        type="search"
        placeholder={t("searchConversations")}
        aria-label={t("searchConversations")}
        value={filter}
        onInput={(e) => setFilter(e.currentTarget.value)}
      />
      {items.length === 0 ? <p class="empty">{t("noConversations")}</p> : null}
      <ul class="convs" role="listbox" aria-label={t("conversationList")} onKeyDown={onKey}>
        {items.map((c) => {
          const title = s.title(c);
          const active = c.conv === s.active;
          const typing = s.typingIn(c.conv);
          const online = c.kind === "direct" ? s.presence.get(c.peer)?.online : undefined;
          const draft = c.draft && !active;
          const label = [title, c.unread ? t("unread", { n: c.unread }) : "", c.unread_mentions ? t("mentions") : "", c.pinned ? t("pinned") : "", c.muted ? t("muted") : ""]
            .filter(Boolean)
            .join(", ");
          return (
            <li
              key={c.conv}
              role="option"
              tabIndex={active || (!s.active && c === items[0]) ? 0 : -1}
              aria-selected={active}
              aria-label={label}
              data-conv={c.conv}
              class={`conv${active ? " active" : ""}${c.pinned ? " pinned" : ""}`}
              onClick={() => s.open(c.conv)}
              onKeyDown={(e) => {
                if (e.key === "Enter" || e.key === " ") {
                  e.preventDefault();
                  s.open(c.conv);
                }
              }}
            >
              <Avatar id={c.conv} label={title} online={online} />
              <div class="conv-main">
                <div class="conv-top">
                  <span class="conv-title">{title}</span>
                  {c.pinned ? (
                    <span class="flag" title={t("pinned")} aria-hidden="true">
                      <Icon name="pin" size={13} />
                    </span>
                  ) : null}
                  {c.muted ? (
                    <span class="flag" title={t("muted")} aria-hidden="true">
                      <Icon name="bellOff" size={13} />
                    </span>
                  ) : null}
                  <span class="conv-time">{c.last ? formatTime(c.last.ts) : ""}</span>
                </div>
                <div class="conv-bottom">
                  <span class="conv-preview">
                    {typing.length ? (
                      <em class="typing-text">{t("typing")}</em>
                    ) : draft ? (
                      <>
                        <span class="draft-label">{t("draft")}</span> {c.draft}
                      </>
                    ) : (
                      `${c.last && c.last.kind !== "system" && (c.kind === "group" || EVENT_KINDS.has(c.last.kind)) ? `${c.last.sender === s.me ? t("you") : name(c.last.sender)}: ` : ""}${preview(c.last, name)}`
                    )}
                  </span>
                  {c.unread_mentions ? (
                    <span class="mention" aria-hidden="true">
                      @
                    </span>
                  ) : null}
                  {c.unread ? (
                    <span class={c.muted ? "badge muted" : "badge"} aria-hidden="true" data-unread={c.unread}>
                      {c.unread > 99 ? "99+" : c.unread}
                    </span>
                  ) : null}
                </div>
              </div>
            </li>
          );
        })}
      </ul>
    </nav>
  );
}
