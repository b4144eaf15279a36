"""Print the README's configuration table from the settings model (run after adding one)."""

from moderation.config import Settings


def rows() -> list[str]:
    out = []
    settings = Settings()
    for section in Settings.model_fields:
        values = getattr(settings, section)
        for name, field in type(values).model_fields.items():
            default = getattr(values, name)
            if section == "dev" and name == "state_dir":
                default = "~/.local/state/moderation"
            shown = "-" if default is None or default == [] else f"`{default}`"
            env = f"MODERATION_{section.upper()}__{name.upper()}"
            out.append(f"| `{env}` | {shown} | {field.description} |")
    return out


if __name__ == "__main__":
    print("\n".join(rows()))
