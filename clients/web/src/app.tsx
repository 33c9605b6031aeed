import { useEffect, useState } from "preact/hooks";
import { ErrorCode, FlareError } from "../../js/src/index.js";
import { t } from "./i18n.js";
import { Session, makeRest } from "./session.js";
import { ChatPane } from "./ui/chat.js";
import { GroupDialog, NewChatDialog, NewGroupDialog, SettingsDialog } from "./ui/dialogs.js";
import { ConversationList } from "./ui/list.js";
import { Icon } from "./ui/icons.js";
import { Login } from "./ui/login.js";
import { SearchDialog } from "./ui/search.js";

type Panel = "chat" | "group" | "settings" | "search" | null;

export function App() {
  const [rest] = useState(makeRest);
  const [session, setSession] = useState<Session | null>(null);
  const [, setTick] = useState(0);
  const render = (): void => setTick((n) => n + 1);
  const [panel, setPanel] = useState<Panel>(null);
  const [groupDialog, setGroupDialog] = useState(false);

  async function start(user: string): Promise<void> {
    const s = new Session(rest, user);
    s.subscribe(render);
    setSession(s);
    try {
      await s.start();
      const conv = decodeURIComponent(location.hash.slice(1));
      if (conv && s.convs.has(conv)) s.open(conv);
    } catch (err) {
      if (err instanceof FlareError && err.code === ErrorCode.UNAUTHORIZED) {
        await s.logout();
        setSession(null);
      } else {
        s.fail(err);
      }
    }
  }

  useEffect(() => {
    const tokens = rest.tokens;
    if (tokens?.userId) void start(tokens.userId);
  }, []);

  useEffect(() => {
    if (!session) return;
    const visible = (): void => session.markRead();
    document.addEventListener("visibilitychange", visible);
    window.addEventListener("focus", visible);
    return () => {
      document.removeEventListener("visibilitychange", visible);
      window.removeEventListener("focus", visible);
    };
  }, [session]);

  if (!session) return <Login rest={rest} onDone={(user) => void start(user)} />;
  const s = session;
  const unread = [...s.convs.values()].reduce((n, c) => n + (c.muted || c.left ? 0 : c.unread), 0);
  document.title = unread ? `(${unread}) ${t("appName")}` : t("appName");
  const hash = s.active ? `#${encodeURIComponent(s.active)}` : "";
  if (location.hash !== hash) history.replaceState(null, "", hash || location.pathname);

  function step(delta: number): void {
    const list = s.ordered();
    const at = list.findIndex((c) => c.conv === s.active);
    const next = list[Math.max(0, Math.min(list.length - 1, at + delta))];
    if (next) s.open(next.conv);
  }

  return (
    <div
      class={`app${s.active ? " has-chat" : ""}`}
      onKeyDown={(e) => {
        // Alt+↑/↓: previous or next conversation from anywhere.
        if (e.altKey && (e.key === "ArrowUp" || e.key === "ArrowDown")) {
          e.preventDefault();
          step(e.key === "ArrowDown" ? 1 : -1);
        }
      }}
    >
      <ConversationList
        session={s}
        onNewChat={() => setPanel("chat")}
        onNewGroup={() => setPanel("group")}
        onSettings={() => setPanel("settings")}
        onSearch={() => setPanel("search")}
      />
      <main class="pane">
        {s.active ? (
          <ChatPane key={s.active} session={s} conv={s.active} onGroupInfo={() => setGroupDialog(true)} onBack={() => s.open(null)} />
        ) : (
          <p class="placeholder">{t("pickConversation")}</p>
        )}
      </main>
      {s.error ? (
        <div class="toast" role="alert">
          {t("errorPrefix")} {s.error}
          <button type="button" class="icon" aria-label={t("close")} onClick={() => ((s.error = ""), render())}>
            <Icon name="close" size={16} />
          </button>
        </div>
      ) : null}
      {panel === "search" ? <SearchDialog session={s} onClose={() => setPanel(null)} /> : null}
      {panel === "chat" ? <NewChatDialog session={s} onClose={() => setPanel(null)} /> : null}
      {panel === "group" ? <NewGroupDialog session={s} onClose={() => setPanel(null)} /> : null}
      {panel === "settings" ? <SettingsDialog session={s} onClose={() => setPanel(null)} onLang={() => render()} /> : null}
      {groupDialog && s.active?.startsWith("g:") ? <GroupDialog session={s} conv={s.active} onClose={() => setGroupDialog(false)} /> : null}
    </div>
  );
}
