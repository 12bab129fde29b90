"""The records a lint run produces: findings and the fixes attached to them."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Edit:
    """Replace the text between two positions (1-based row and column, end exclusive)."""

    content: str
    row: int
    column: int
    end_row: int
    end_column: int

    def to_json(self) -> dict:
        return {
            "content": self.content,
            "location": {"row": self.row, "column": self.column},
            "end_location": {"row": self.end_row, "column": self.end_column},
        }

    @classmethod
    def from_json(cls, data: dict) -> Edit:
        return cls(data["content"], data["location"]["row"], data["location"]["column"],
                   data["end_location"]["row"], data["end_location"]["column"])


@dataclass(frozen=True)
class Fix:
    """A safe fix: applying all edits together removes the finding and keeps behaviour intended."""

    message: str
    edits: tuple[Edit, ...]
    applicability: str = "safe"

    def to_json(self) -> dict:
        return {"applicability": self.applicability, "message": self.message,
                "edits": [e.to_json() for e in self.edits]}

    @classmethod
    def from_json(cls, data: dict | None) -> Fix | None:
        if data is None:
            return None
        return cls(data["message"], tuple(Edit.from_json(e) for e in data["edits"]),
                   data.get("applicability", "safe"))


@dataclass(frozen=True)
class Finding:
    """One problem at one place. Rows and columns are 1-based; the end is exclusive."""

    code: str
    message: str
    filename: str
    row: int
    column: int
    end_row: int
    end_column: int
    fix: Fix | None = field(default=None)

    @property
    def sort_key(self) -> tuple:
        return (self.filename, self.row, self.column, self.code)

    def to_json(self) -> dict:
        """ruff's keys; the output formats add the rule's docs ``url``."""
        return {
            "code": self.code,
            "message": self.message,
            "filename": self.filename,
            "location": {"row": self.row, "column": self.column},
            "end_location": {"row": self.end_row, "column": self.end_column},
            "fix": self.fix.to_json() if self.fix else None,
        }

    @classmethod
    def from_json(cls, data: dict) -> Finding:
        return cls(data["code"], data["message"], data["filename"],
                   data["location"]["row"], data["location"]["column"],
                   data["end_location"]["row"], data["end_location"]["column"],
                   Fix.from_json(data.get("fix")))
