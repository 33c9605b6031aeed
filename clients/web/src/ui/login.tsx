import { useState } from "preact/hooks";
import type { RestClient } from "../../../js/src/index.js";
import { t } from "../i18n.js";

export function Login(props: { rest: RestClient; onDone: (user: string) => void }) {
  const [mode, setMode] = useState<"in" | "up">("in");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [display, setDisplay] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  async function submit(e: Event): Promise<void> {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      const tokens =
        mode === "in"
          ? await props.rest.login(username.trim(), password)
          : await props.rest.register(username.trim(), password, display.trim() ? { displayName: display.trim() } : {});
      props.onDone(tokens.user_id);
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  }

  const title = mode === "in" ? t("signIn") : t("signUp");
  return (
    <main class="login">
      <form onSubmit={submit} aria-label={title}>
        <h1>
          <span class="logo" aria-hidden="true">
            ⚡
          </span>{" "}
          {t("appName")}
        </h1>
        <h2>{title}</h2>
        <label>
          {t("username")}
          <input name="username" autocomplete="username" required value={username} onInput={(e) => setUsername(e.currentTarget.value)} />
        </label>
        <label>
          {t("password")}
          <input
            name="password"
            type="password"
            autocomplete={mode === "in" ? "current-password" : "new-password"}
            required
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </label>
        {mode === "up" ? (
          <label>
            {t("displayName")}
            <input name="display_name" autocomplete="nickname" value={display} onInput={(e) => setDisplay(e.currentTarget.value)} />
          </label>
        ) : null}
        {error ? (
          <p class="error" role="alert">
            {error}
          </p>
        ) : null}
        <button type="submit" class="primary" disabled={busy}>
          {title}
        </button>
        <button type="button" class="link" onClick={() => setMode(mode === "in" ? "up" : "in")}>
          {mode === "in" ? t("noAccount") : t("haveAccount")}
        </button>
      </form>
    </main>
  );
}
