import type { ComponentChildren } from "preact";
import { useEffect, useRef } from "preact/hooks";
import { t } from "../i18n.js";
import { Icon } from "./icons.js";

/** A modal dialog: focus moves into it, Escape closes it, focus goes back where it was. */
export function Dialog(props: { title: string; onClose: () => void; children: ComponentChildren; wide?: boolean }) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const before = document.activeElement as HTMLElement | null;
    const first = ref.current?.querySelector<HTMLElement>("input, button, select, textarea, [tabindex='0']");
    first?.focus();
    return () => {
      // Back where it was, unless something else (the chat the dialog opened) took the focus meanwhile.
      const now = document.activeElement;
      if (!now || now === document.body || ref.current?.contains(now)) before?.focus?.();
    };
  }, []);
  return (
    <div class="backdrop" onClick={(e) => e.target === e.currentTarget && props.onClose()}>
      <div
        ref={ref}
        class={props.wide ? "dialog wide" : "dialog"}
        role="dialog"
        aria-modal="true"
        aria-label={props.title}
        onKeyDown={(e) => {
          if (e.key === "Escape") {
            e.stopPropagation();
            props.onClose();
          }
        }}
      >
        <header>
          <h2>{props.title}</h2>
          <button type="button" class="icon" aria-label={t("close")} onClick={props.onClose}>
            <Icon name="close" />
          </button>
        </header>
        {props.children}
      </div>
    </div>
  );
}

/** Initials on a colour picked from the id: every user and group has a recognisable avatar without images. */
export function Avatar(props: { id: string; label: string; online?: boolean | undefined }) {
  let hash = 0;
  for (const ch of props.id) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  const initials = [...props.label.trim()].slice(0, 2).join("").toUpperCase() || "?";
  return (
    <span class={`avatar hue-${hash % 8}`} aria-hidden="true">
      {initials}
      {props.online ? <span class="dot" /> : null}
    </span>
  );
}

export const EMOJI = ["😀", "😂", "😊", "😍", "🤔", "😢", "😮", "😡", "👍", "👎", "👏", "🙏", "🎉", "❤️", "🔥", "✅", "👀", "💯", "🚀", "☕", "🍕", "🌟", "😎", "🙌"];
export const QUICK_REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🎉"];

export function EmojiGrid(props: { onPick: (emoji: string) => void; label: string; choices?: string[] }) {
  return (
    <div class="emoji-grid" role="group" aria-label={props.label}>
      {(props.choices ?? EMOJI).map((e) => (
        <button type="button" key={e} aria-label={e} onClick={() => props.onPick(e)}>
          {e}
        </button>
      ))}
    </div>
  );
}
