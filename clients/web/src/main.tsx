/** The web client's entry: theme and language first (no flash of the wrong ones), then the app. */
import { render } from "preact";
import "./app.css";
import { App } from "./app.js";
import { lang, setLang } from "./i18n.js";
import { applyTheme, savedTheme } from "./ui/dialogs.js";

applyTheme(savedTheme());
setLang(lang);
render(<App />, document.getElementById("app") as HTMLElement);
