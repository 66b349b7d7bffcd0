"""What nextbest tells a customer about their data, in their language (issue 20, item 3).

Pure core (no I/O; the clock is passed in):

    texts       every customer-facing text in Danish, Dutch, German, English and Spanish
    reasons     a decision's reasons said again in the customer's language, from their facts
    why         why a customer saw what a decision showed them, and the data it was chosen
                from (``GET /v1/me/why/{decision_id}``)
    data        what nextbest knows about a customer, where it came from and what it is used
                for (``GET /v1/me/data``)
"""

__all__ = ["data", "reasons", "texts", "why"]
