"""What nextbest tells a customer about their data, in their language (issue 20, item 3).

Pure core (no I/O; the clock is passed in):

    texts       every customer-facing text in Danish, Dutch, German, English and Spanish
    reasons     a decision's reasons said again in the customer's language, from their facts
"""

__all__ = ["reasons", "texts"]
