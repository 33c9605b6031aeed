import { useEffect, useRef, useState } from "preact/hooks";
import { ErrorCode, FlareError, type Message } from "../../../js/src/index.js";
import { formatFull, t } from "../i18n.js";
import type { Session } from "../session.js";
import { Avatar, Dialog } from "./common.js";

interface Hit {
  message: Message;
  snippet: string;
  highlights: Array<[number, number]>;
}

/** The snippet as text with its matches marked; highlights count code points, not UTF-16 units. */
function Snippet(props: { hit: Hit }) {
  const chars = Array.from(props.hit.snippet);
  const parts: preact.ComponentChildren[] = [];
  let at = 0;
  for (const [start, end] of props.hit.highlights) {
    if (start < at) continue;
    parts.push(chars.slice(at, start).join(""));
    parts.push(<mark key={start}>{chars.slice(start, end).join("")}</mark>);
    at = end;
  }
  parts.push(chars.slice(at).join(""));
  return <span class="snippet">{parts}</span>;
}

/** Server-side message search (GET /v1/search): every term, as substrings, in what the user may read. */
export function SearchDialog(props: { session: Session; onClose: () => void }) {
  const s = props.session;
  const [q, setQ] = useState("");
  const [here, setHere] = useState(false);
  const [hits, setHits] = useState<Hit[] | null>(null);
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState("");
  const asked = useRef("");

  async function search(cursor: string | null): Promise<void> {
    const query = q.trim();
    if (!query) return;
    setError("");
    asked.current = query;
    try {
      const params: Record<string, string | number> = { q: query, limit: 20 };
      if (here && s.active) params["conv"] = s.active;
      if (cursor) params["cursor"] = cursor;
      const page = await s.rest.request<{ items: Hit[]; next: string | null }>("GET", "/v1/search", { params });
      if (asked.current !== query) return; // a newer search replaced this one
      setHits(cursor ? [...(hits ?? []), ...page.items] : page.items);
      setNext(page.next);
      void s.loadNames(page.items.map((h) => h.message.sender));
    } catch (err) {
      setError(err instanceof FlareError && err.code === ErrorCode.UNAVAILABLE ? t("searchOff") : (err as Error).message);
    }
  }
  useEffect(() => {
    const timer = setTimeout(() => void search(null), 300);
    return () => clearTimeout(timer);
  }, [q, here]);

  return (
    <Dialog title={t("search")} onClose={props.onClose} wide>
      <form
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          void search(null);
        }}
      >
        <input type="search" name="q" aria-label={t("search")} placeholder={t("searchPlaceholder")} maxLength={200} value={q} onInput={(e) => setQ(e.currentTarget.value)} />
        {s.active ? (
          <label class="radio">
            <input type="checkbox" checked={here} onChange={(e) => setHere(e.currentTarget.checked)} />
            {t("searchThisConv")}
          </label>
        ) : null}
      </form>
      {error ? (
        <p class="error" role="alert">
          {error}
        </p>
      ) : null}
      {hits && !hits.length && !error ? <p class="muted">{t("noResults")}</p> : null}
      <ul class="pick-list results" aria-live="polite">
        {(hits ?? []).map((h) => {
          const c = s.convs.get(h.message.conv);
          const title = c ? s.title(c) : h.message.conv;
          return (
            <li key={`${h.message.conv}:${h.message.seq}`}>
              <button
                type="button"
                data-seq={h.message.seq}
                onClick={() => {
                  props.onClose();
                  void s.jumpTo(h.message.conv, h.message.seq);
                }}
              >
                <Avatar id={h.message.conv} label={title} />
                <span class="result">
                  <span class="result-head">
                    <b>{title}</b>
                    {c?.kind === "group" ? ` · ${s.name(h.message.sender)}` : ""} <time>{formatFull(h.message.ts)}</time>
                  </span>
                  <Snippet hit={h} />
                </span>
              </button>
            </li>
          );
        })}
      </ul>
      {next ? (
        <div class="buttons">
          <button type="button" onClick={() => void search(next)}>
            {t("loadMore")}
          </button>
        </div>
      ) : null}
    </Dialog>
  );
}
