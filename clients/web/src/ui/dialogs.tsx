import { useEffect, useState } from "preact/hooks";
import { type Json, subscribeWebPush } from "../../../js/src/index.js";
import { roleName } from "../format.js";
import { type Lang, lang, setLang, t } from "../i18n.js";
import type { Session } from "../session.js";
import { Dialog } from "./common.js";

function ids(text: string): string[] {
  return [
    ...new Set(
      text
        .split(/[\s,，]+/)
        .map((s) => s.trim())
        .filter(Boolean),
    ),
  ];
}

export function NewChatDialog(props: { session: Session; onClose: () => void }) {
  const [user, setUser] = useState("");
  const [error, setError] = useState("");
  return (
    <Dialog title={t("newChat")} onClose={props.onClose}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          try {
            await props.session.openDirect(user);
            props.onClose();
          } catch (err) {
            setError((err as Error).message);
          }
        }}
      >
        <label>
          {t("startChatWith")}
          <input name="user" required value={user} onInput={(e) => setUser(e.currentTarget.value)} />
        </label>
        {error ? (
          <p class="error" role="alert">
            {error}
          </p>
        ) : null}
        <div class="buttons">
          <button type="submit" class="primary">
            {t("start")}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

export function NewGroupDialog(props: { session: Session; onClose: () => void }) {
  const [name, setName] = useState("");
  const [members, setMembers] = useState("");
  const [error, setError] = useState("");
  return (
    <Dialog title={t("newGroup")} onClose={props.onClose}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          try {
            await props.session.createGroup(name.trim(), ids(members));
            props.onClose();
          } catch (err) {
            setError((err as Error).message);
          }
        }}
      >
        <label>
          {t("groupName")}
          <input name="name" required maxLength={128} value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <label>
          {t("membersComma")}
          <input name="members" value={members} onInput={(e) => setMembers(e.currentTarget.value)} />
        </label>
        {error ? (
          <p class="error" role="alert">
            {error}
          </p>
        ) : null}
        <div class="buttons">
          <button type="submit" class="primary">
            {t("create")}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

export function GroupDialog(props: { session: Session; conv: string; onClose: () => void }) {
  const s = props.session;
  const gid = props.conv.slice(2);
  const [group, setGroup] = useState<Json | null>(null);
  const [members, setMembers] = useState<Json[]>([]);
  const [adding, setAdding] = useState("");
  const [name, setName] = useState("");
  const [error, setError] = useState("");

  async function reload(): Promise<void> {
    try {
      const [g, m] = await Promise.all([s.rest.group(gid), s.rest.groupMembers(gid)]);
      setGroup(g);
      setName(g["name"]);
      setMembers(m);
      void s.loadNames(m.map((x) => x["user_id"]));
    } catch (err) {
      setError((err as Error).message);
    }
  }
  useEffect(() => void reload(), []);

  async function run(work: () => Promise<unknown>): Promise<void> {
    setError("");
    try {
      await work();
      await reload();
      void s.resync();
    } catch (err) {
      setError((err as Error).message);
    }
  }

  const myRole = members.find((m) => m["user_id"] === s.me)?.["role"] ?? "member";
  const manager = myRole === "owner" || myRole === "admin";
  return (
    <Dialog title={t("groupInfo")} onClose={props.onClose} wide>
      {manager ? (
        <form class="inline" onSubmit={(e) => (e.preventDefault(), void run(() => s.rest.updateGroup(gid, { name: name.trim() })))}>
          <label>
            {t("groupName")}
            <input name="group_name" required maxLength={128} value={name} onInput={(e) => setName(e.currentTarget.value)} />
          </label>
          <button type="submit">{t("rename")}</button>
        </form>
      ) : (
        <h3>{group?.["name"] ?? ""}</h3>
      )}
      <h3>{t("members", { n: members.length })}</h3>
      <ul class="members">
        {members.map((m) => {
          const user = m["user_id"] as string;
          const role = m["role"] as string;
          return (
            <li key={user} data-user={user}>
              <span>
                {s.name(user)} <span class="muted">@{user}</span> <span class="role">{roleName(role)}</span>
              </span>
              {myRole === "owner" && user !== s.me ? (
                <button type="button" onClick={() => void run(() => s.rest.setRole(gid, user, role === "admin" ? "member" : "admin"))}>
                  {role === "admin" ? t("makeMember") : t("makeAdmin")}
                </button>
              ) : null}
              {manager && user !== s.me && role !== "owner" && (myRole === "owner" || role === "member") ? (
                <button type="button" aria-label={`${t("remove")} ${user}`} onClick={() => void run(() => s.rest.removeMember(gid, user))}>
                  {t("remove")}
                </button>
              ) : null}
            </li>
          );
        })}
      </ul>
      {manager ? (
        <form class="inline" onSubmit={(e) => (e.preventDefault(), void run(async () => (await s.rest.addMembers(gid, ids(adding)), setAdding(""))))}>
          <label>
            {t("addMembers")}
            <input name="add" value={adding} onInput={(e) => setAdding(e.currentTarget.value)} />
          </label>
          <button type="submit">{t("add")}</button>
        </form>
      ) : null}
      {error ? (
        <p class="error" role="alert">
          {error}
        </p>
      ) : null}
      <div class="buttons">
        <button
          type="button"
          class="danger"
          onClick={() =>
            void run(async () => {
              await s.rest.leaveGroup(gid);
              s.open(null);
              props.onClose();
            })
          }
        >
          {t("leaveGroup")}
        </button>
      </div>
    </Dialog>
  );
}

export type Theme = "auto" | "light" | "dark";

export function applyTheme(theme: Theme): void {
  localStorage.setItem("flare-theme", theme);
  if (theme === "auto") delete document.documentElement.dataset["theme"];
  else document.documentElement.dataset["theme"] = theme;
}

export function savedTheme(): Theme {
  const v = localStorage.getItem("flare-theme");
  return v === "light" || v === "dark" ? v : "auto";
}

export function SettingsDialog(props: { session: Session; onClose: () => void; onLang: () => void }) {
  const s = props.session;
  const [theme, setTheme] = useState<Theme>(savedTheme());
  const [vapid, setVapid] = useState<string | null | undefined>(undefined); // undefined: asking; null: none
  const [push, setPush] = useState("");
  const [display, setDisplay] = useState(s.name(s.me));

  useEffect(() => {
    s.rest
      .request<{ public_key: string }>("GET", "/v1/push/vapid", { anonymous: true })
      .then((r) => setVapid(r.public_key))
      .catch(() => setVapid(null));
  }, []);

  async function enablePush(): Promise<void> {
    try {
      await subscribeWebPush({
        rest: s.rest,
        device: s.device,
        applicationServerKey: vapid as string,
        serviceWorkerUrl: new URL("sw.js", location.href).pathname,
        locale: lang === "zh" ? "zh-CN" : "en",
      });
      setPush(t("notificationsOn"));
    } catch (err) {
      setPush((err as Error).message);
    }
  }

  return (
    <Dialog title={t("settings")} onClose={props.onClose}>
      <p>{t("signedInAs", { who: `${s.name(s.me)} (@${s.me})` })}</p>
      <form
        class="inline"
        onSubmit={(e) => {
          e.preventDefault();
          const name = display.trim();
          if (!name) return;
          void s.act(async () => {
            await s.rest.updateMe({ display_name: name });
            s.names.set(s.me, name);
            s.changed();
          });
        }}
      >
        <label>
          {t("yourName")}
          <input name="my_name" required maxLength={128} value={display} onInput={(e) => setDisplay(e.currentTarget.value)} />
        </label>
        <button type="submit">{t("save")}</button>
      </form>
      <fieldset>
        <legend>{t("theme")}</legend>
        {(["auto", "light", "dark"] as const).map((v) => (
          <label class="radio" key={v}>
            <input type="radio" name="theme" value={v} checked={theme === v} onChange={() => (setTheme(v), applyTheme(v))} />
            {v === "auto" ? t("themeAuto") : v === "light" ? t("themeLight") : t("themeDark")}
          </label>
        ))}
      </fieldset>
      <fieldset>
        <legend>{t("language")}</legend>
        {(["en", "zh"] as Lang[]).map((v) => (
          <label class="radio" key={v}>
            <input type="radio" name="lang" value={v} checked={lang === v} onChange={() => (setLang(v), props.onLang())} />
            {v === "en" ? "English" : "中文"}
          </label>
        ))}
      </fieldset>
      <fieldset>
        <legend>{t("notifications")}</legend>
        {vapid === null ? <p class="muted">{t("notificationsUnavailable")}</p> : null}
        {vapid ? (
          <button type="button" onClick={() => void enablePush()}>
            {t("enableNotifications")}
          </button>
        ) : null}
        {push ? <p role="status">{push}</p> : null}
      </fieldset>
      <div class="buttons">
        <button type="button" class="danger" onClick={() => void s.logout().then(() => location.reload())}>
          {t("logout")}
        </button>
      </div>
    </Dialog>
  );
}
